#!/usr/bin/env bash
# fairseq's examples/translation/prepare-iwslt14.sh with PyPI tools (sacremoses, subword-nmt) instead of
# the Moses perl scripts: tokenise, clean 1-175 with ratio 1.5, lowercase, every 23rd training line to
# valid, test = dev2010 + TEDX.dev2012 + tst2010 + tst2011 + tst2012, joint BPE with 10000 merges.
#
# usage: bash launch/prepare_iwslt14.sh SOURCE [OUT] [--bpe-tokens N] [--devtest-only] [--compare REF_TMP]
#   SOURCE  de-en.tgz (IWSLT 2014 De-En; `python -m radam_repro.data fetch iwslt14` downloads and prepares it)
#           or the de-en/ folder extracted from it
#   OUT     output folder (default: data/iwslt14/iwslt14.tokenized.de-en); the tokenised text goes to OUT/tmp
#   --devtest-only  only the XML dev/test files (no train text needed), e.g. to check against a reference:
#     bash launch/prepare_iwslt14.sh ../shared/data/iwslt14/orig/de-en /tmp/iwslt --devtest-only \
#          --compare ../shared/data/iwslt14/iwslt14.tokenized.de-en/tmp
# Then train with: python -m radam_repro task=nmt task.data_dir=OUT
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
source_path=$1
shift
out=data/iwslt14/iwslt14.tokenized.de-en
if [[ $# -gt 0 && "$1" != --* ]]; then
  out=$1
  shift
fi

if [[ -f "$source_path" ]]; then
  extracted=$(mktemp -d)
  trap 'rm -rf "$extracted"' EXIT
  tar -xzf "$source_path" -C "$extracted"
  orig=$extracted/de-en
elif [[ -d "$source_path" ]]; then
  orig=$source_path
else
  echo "prepare_iwslt14.sh: $source_path is neither de-en.tgz nor its extracted de-en/ folder" >&2
  exit 2
fi

"${PYTHON:-python}" -m radam_repro.data.prepare_iwslt14 --orig "$orig" --out "$out" "$@"
echo "prepared $out"
