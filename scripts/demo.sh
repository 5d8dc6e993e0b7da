#!/usr/bin/env bash
# The main job on the embedded default: SQLite under ./.kg-demo and the bundled SmolLM2 GGUF.
set -euo pipefail
KG=${1:-kg}
export KG_HOME=${KG_HOME:-$PWD/.kg-demo}
unset KG_DATABASE_URL
"$KG" db upgrade
"$KG" admin extraction show
