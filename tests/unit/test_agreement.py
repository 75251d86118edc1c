"""LocalAgreement over consecutive partial hypotheses (pure)."""

from __future__ import annotations

from gateway.agreement import LocalAgreement


def test_first_hypothesis_has_no_stable_prefix() -> None:
    assert LocalAgreement().update("and so my") == ""


def test_agreed_prefix_between_consecutive_hypotheses() -> None:
    la = LocalAgreement()
    la.update("And so my fellow")
    assert la.update("And so my fellow Americans, ask") == "And so my fellow"
    assert la.update("And so, my fellow Americans ask not") == "And so, my fellow Americans ask"


def test_stable_prefix_never_shrinks_or_changes() -> None:
    la = LocalAgreement()
    la.update("the cat sat")
    assert la.update("the cat sat down") == "the cat sat"
    # a later disagreement inside the stable prefix does not take words back
    assert la.update("a cat sat down on") == "the cat sat"
    assert la.update("a cat sat down on the mat") == "the cat sat"


def test_case_and_punctuation_do_not_break_agreement() -> None:
    la = LocalAgreement()
    la.update("Ask not what")
    assert la.update("ask not, what your") == "ask not, what"


def test_display_keeps_the_stable_words_and_takes_the_rest_of_the_hypothesis() -> None:
    la = LocalAgreement()
    la.update("like your")
    la.update("like your country")
    assert la.update("what your country can") == "like your"
    assert la.display("what your country can") == "like your country can"
