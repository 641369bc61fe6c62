#!/bin/sh
# A release pipeline's last step: upload a build, check the digest, publish it.
#   FWREPO_URL=http://127.0.0.1:8443 FWREPO_KEY=fwr_... ./upload-and-publish.sh ACME AC22 1.4.0 build/ac22.bin
set -eu
vendor=$1 model=$2 version=$3 image=$4
url=${FWREPO_URL:-http://127.0.0.1:8443}
digest=$(sha256sum "$image" | cut -d' ' -f1)
record=$(curl -sS --fail-with-body -H "Authorization: Bearer $FWREPO_KEY" \
    -F "file=@$image" -F "vendor=$vendor" -F "models=$model" -F "version=$version" -F "sha256=$digest" \
    "$url/api/v1/firmware")
id=$(printf '%s' "$record" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -sS --fail-with-body -X POST -H "Authorization: Bearer $FWREPO_KEY" "$url/api/v1/firmware/$id/publish"
echo
