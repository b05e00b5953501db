#!/bin/sh
echo "Hello from an image built by irctl on $(uname -s)."
