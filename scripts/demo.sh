#!/usr/bin/env bash
# The README demo: the embedded log through the CLI, no server. Usage: demo.sh HEADWATER DATA_DIR
set -euo pipefail
headwater=${1:-headwater}
data_dir=${2:-./headwater-demo-data}
export HEADWATER_DATA_DIR="$data_dir"
rm -rf "$data_dir" "$data_dir-fraud"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$headwater" topic create sensors -p 3 -c retention.ms=86400000
step "$headwater" topic create readings-by-intersection -p 3 -c cleanup.policy=compact

echo
echo "\$ (100,000 sensor readings, keyed by intersection) | headwater topic produce sensors --key-separator ="
python3 - <<'PY' | "$headwater" topic produce sensors --key-separator '='
import random
rng = random.Random(7)
for n in range(100_000):
    intersection = f"intersection-{rng.randrange(40):02d}"
    print(f"{intersection}={{\"reading\": {n}, \"vehicles_per_minute\": {rng.randrange(5, 90)}}}")
PY

step "$headwater" topic list
step "$headwater" topic describe sensors
echo
echo "\$ headwater topic consume sensors -p 0 -n 5 -f '%p/%o %k %v\n'"
"$headwater" topic consume sensors -p 0 -n 5 -f '%p/%o %k %v\n'
step "$headwater" topic consume sensors --offset @0 -p 1 -n 2 -f json
step "$headwater" log verify

# The stream processing demo: payments checked against each card's last 60 s, alerts printed
# live as the runtime produces them, on its own embedded log.
python=$(dirname "$headwater")/python
step "$python" examples/fraud_detection.py --data-dir "$data_dir-fraud" --events 2000 --rate 2000
echo
echo "Data is in $data_dir and $data_dir-fraud; run '$headwater --help' for more."
