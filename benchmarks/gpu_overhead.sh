#!/usr/bin/env bash
# benchmarks/overhead.py on the GPU machine (Python 3.12, torch preinstalled, no network).
# Run from the repository root, with the git-ignored .whl/ folder carried along (see
# benchmarks/README.md, 'GPU run'). Results go to $OUT/overhead
# (overhead.json + overhead.md); extra arguments are passed to overhead.py (e.g. --hosts codeformer).
set -euo pipefail
OUT="${OUT:-benchmarks/out}"
ls .whl/*.whl > /dev/null  # fails early when the wheel folder was not carried
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import iqp_plugin, torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 benchmarks/overhead.py --device cuda --budget full --out "$OUT/overhead" "$@"
