"""Load testing: the predecessor's Locust scenario (``locustfile.py`` at the repository root) and
the plain client logic behind it (:mod:`loadtest.predecessor`)."""
