#!/bin/sh
# Vendor the web page's JavaScript from npm into kg/server/static/vendor/ (committed, shipped in
# the wheel), so `kg serve` never fetches anything at run time and works air-gapped.
#
#   scripts/vendor_js.sh            # the pinned versions below
#
# Each package tarball is checked against the integrity hash npm's registry publishes for it
# (npm pack verifies it); the files kept and their SHA-256 go to vendor/SOURCES.txt.
set -eu

CYTOSCAPE_VERSION=3.34.4      # graph view (its built-in "cose" layout is force-directed)
SWAGGER_UI_VERSION=5.35.0     # /docs without a CDN

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/kg/server/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

fetch() {  # fetch NAME VERSION -> $work/NAME/package
    (cd "$work" && npm pack --silent "$1@$2" >/dev/null)
    mkdir -p "$work/$1"
    tar -xzf "$work/$1-$2.tgz" -C "$work/$1"
}

fetch cytoscape "$CYTOSCAPE_VERSION"
cp "$work/cytoscape/package/dist/cytoscape.min.js" "$dest/cytoscape.min.js"
cp "$work/cytoscape/package/LICENSE" "$dest/LICENSE.cytoscape"

fetch swagger-ui-dist "$SWAGGER_UI_VERSION"
cp "$work/swagger-ui-dist/package/swagger-ui-bundle.js" "$dest/swagger-ui-bundle.js"
cp "$work/swagger-ui-dist/package/swagger-ui.css" "$dest/swagger-ui.css"
cp "$work/swagger-ui-dist/package/LICENSE" "$dest/LICENSE.swagger-ui"
# The bundle ends with a source-map comment; the map is not shipped, so drop the reference.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest/swagger-ui-bundle.js"
sed -i 's#/\*\# sourceMappingURL=[^*]*\*/##' "$dest/swagger-ui.css"

{
    echo "Vendored by scripts/vendor_js.sh from the npm registry; do not edit by hand."
    echo "cytoscape@$CYTOSCAPE_VERSION (MIT): cytoscape.min.js, LICENSE.cytoscape"
    echo "swagger-ui-dist@$SWAGGER_UI_VERSION (Apache-2.0): swagger-ui-bundle.js, swagger-ui.css, LICENSE.swagger-ui"
    echo
    cd "$dest" && sha256sum cytoscape.min.js swagger-ui-bundle.js swagger-ui.css
} > "$dest/SOURCES.txt"
echo "vendored into $dest:"
ls -l "$dest"
