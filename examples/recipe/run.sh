#!/usr/bin/env bash
# The main job for this example: see ../build-and-run.sh.
exec "$(dirname "$0")/../build-and-run.sh" "$(dirname "$0")" "$@"
