#!/usr/bin/env bash
# The main job: make a busybox base image locally, build this directory with irctl, and run the
# resulting image's CMD with runc.  Offline; run as root after ./setup.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${OUT:-$top/out/pydsl}
rm -rf "$out" && mkdir -p "$out"

(cd "$top" && python3 -m tests.support.baseimage "$out/busybox")
printf 's3cr3t-example-token' > "$out/token"

irctl build "$here" \
    --build-context busybox=oci-layout://"$out/busybox" \
    --secret id=token,src="$out/token" \
    --output type=oci,tar=false,dest="$out/image" -t hello:latest

umoci unpack --image "$out/image:latest" "$out/bundle" >/dev/null
python3 - "$out/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["process"]["terminal"] = False; json.dump(c, open(p, "w"))
PY
runc run --bundle "$out/bundle" "irctl-pydsl-$$"
