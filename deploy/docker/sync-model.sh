#!/bin/sh
# Make a faster-whisper (CTranslate2) model directory available before the ASR worker starts.
#
#   sync-model.sh SOURCE DEST
#
# SOURCE  s3://bucket/prefix/large-v3   synced with `aws s3 sync` (run it in an image that has the
#                                       AWS CLI, e.g. the initContainer of deploy/keda/overlays/eks-gpu;
#                                       credentials come from EKS Pod Identity / IRSA)
#         /path/on/a/volume             copied with `cp -a` (a PVC, a hostPath cache, an NFS share)
# DEST    the directory ASR_MODEL points at (an emptyDir shared with the worker container)
#
# The copy is skipped when DEST already holds a complete model (a restarted pod on the same node
# keeps its emptyDir), and the script fails loudly when the result is not a complete model, so a
# bad bucket path stops the pod in Init instead of crash-looping the worker.
set -eu

SOURCE="${1:?usage: sync-model.sh SOURCE DEST}"
DEST="${2:?usage: sync-model.sh SOURCE DEST}"
REQUIRED="model.bin config.json tokenizer.json vocabulary.txt"

complete() {
  for f in $REQUIRED; do
    [ -s "$1/$f" ] || return 1
  done
  return 0
}

if complete "$DEST"; then
  echo "model already present in $DEST"
  exit 0
fi

mkdir -p "$DEST"
case "$SOURCE" in
  s3://*)
    command -v aws >/dev/null 2>&1 || { echo "aws CLI not found: run this in an image that has it" >&2; exit 1; }
    aws s3 sync --only-show-errors --no-progress "$SOURCE" "$DEST"
    ;;
  /*)
    [ -d "$SOURCE" ] || { echo "model source $SOURCE is not a directory" >&2; exit 1; }
    cp -a "$SOURCE/." "$DEST/"
    ;;
  *)
    echo "unsupported model source '$SOURCE' (use s3://... or an absolute path)" >&2
    exit 1
    ;;
esac

if ! complete "$DEST"; then
  echo "model in $DEST is incomplete: expected $REQUIRED" >&2
  ls -la "$DEST" >&2 || true
  exit 1
fi
echo "model synced from $SOURCE to $DEST"
