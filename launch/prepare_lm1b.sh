#!/usr/bin/env bash
# Prepare One Billion Word for `python -m radam_repro task=lm1b`: fetch the official archive (verified, unpacked
# into place by `python -m radam_repro.data fetch lm1b`), then build the vocabulary (threshold 3) and encode every
# shard once.
#
#   launch/prepare_lm1b.sh [DATA_ROOT]          # default: $RADAM_REPRO_DATA, else ./data
#   RADAM_REPRO_MIRROR=file:///archives launch/prepare_lm1b.sh   # /archives/lm1b/1-billion-word-...-r13output.tar.gz
#
# Result (the layout task=lm1b reads, with data_root=DATA_ROOT):
#   DATA_ROOT/lm1b/1-billion-word-language-modeling-benchmark-r13output/
#     training-monolingual.tokenized.shuffled/news.en-000NN-of-00100          (99 shards, about 4 GB)
#     heldout-monolingual.tokenized.shuffled/news.en.heldout-000NN-of-00050   (50 shards)
# and the cache: $RADAM_REPRO_CACHE/lm (default ~/.cache/radam_repro/lm; the data folder may stay read-only):
#     vocab-t3-<inputs hash>.tsv, tokens-<vocab hash>/*.npy (int32, about 3.3 GB)
# Counting and encoding take a few tens of minutes on one core; it is done once, and training
# would otherwise do it on its first start.
set -euo pipefail

root="${1:-${RADAM_REPRO_DATA:-data}}"
python=${PYTHON:-python}  # the interpreter of the environment radam_repro is installed in
"$python" -m radam_repro.data fetch lm1b --root "$root"
"$python" -m radam_repro.data.lm1b --data-dir "$root/lm1b/1-billion-word-language-modeling-benchmark-r13output" --threshold 3
