#!/usr/bin/env bash
# build-and-run.sh DIR: make a busybox base image locally (an OCI layout, no network), build DIR
# with irctl — its Dockerfile, irctl.toml or build.py — and run the image's CMD with runc.
# Offline; run as root after ./setup.sh.  OUT=... chooses where the layout, image and bundle go.
set -euo pipefail
here=$(cd "$1" && pwd)
name=$(basename "$here")
top=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$top/out/$name}
rm -rf "$out" && mkdir -p "$out"
command -v irctl >/dev/null || irctl() { python3 -m irctl "$@"; }

(cd "$top" && python3 -m tests.support.baseimage "$out/busybox" >/dev/null)
printf 's3cr3t-example-token' > "$out/token"

# a build.py is a program: irctl runs it (sandboxed) only when it is named explicitly
file=()
[ -f "$here/build.py" ] && [ ! -f "$here/Dockerfile" ] && [ ! -f "$here/irctl.toml" ] && file=(-f "$here/build.py")
irctl build "$here" "${file[@]}" \
    --build-context busybox=oci-layout://"$out/busybox" \
    --secret id=token,src="$out/token" \
    --output type=oci,tar=false,dest="$out/image" -t "$name:latest"

umoci unpack --image "$out/image:latest" "$out/bundle" >/dev/null
python3 - "$out/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["process"]["terminal"] = False; json.dump(c, open(p, "w"))
PY
runc run --bundle "$out/bundle" "irctl-$name-$$"
