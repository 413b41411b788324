#!/usr/bin/env bash
# Build the image and Flex Template, then run tileseg on Dataflow GPU workers.
#   PROJECT=my-proj REGION=europe-west4 BUCKET=my-bucket deploy/launch.sh gs://my-bucket/tiles/'*.tif' gs://my-bucket/tileseg-out
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
INPUT=${1:?input glob}; OUTPUT=${2:?output folder}
TAG=${TAG:-$(git rev-parse --short HEAD)}
IMAGE="$REGION-docker.pkg.dev/$PROJECT/tileseg/tileseg:$TAG"
TEMPLATE="gs://$BUCKET/templates/tileseg-$TAG.json"
cd "$(dirname "$0")/.."

gcloud builds submit --project "$PROJECT" --region "$REGION" --tag "$IMAGE" --config /dev/stdin . <<YAML
steps:
- name: gcr.io/cloud-builders/docker
  args: [build, -f, deploy/Dockerfile, -t, $IMAGE, .]
images: [$IMAGE]
timeout: 3600s
YAML

gcloud dataflow flex-template build "$TEMPLATE" --project "$PROJECT" \
  --image "$IMAGE" --sdk-language PYTHON --metadata-file deploy/metadata.json

# One GPU per worker and one SDK process per VM, so the model is loaded once per GPU.
gcloud dataflow flex-template run "tileseg-$(date +%Y%m%d-%H%M%S)" --project "$PROJECT" --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE" \
  --parameters input="$INPUT",output="$OUTPUT",precision=auto,batch_size=8 \
  --parameters sdk_container_image="$IMAGE" \
  --worker-machine-type g2-standard-8 --max-workers "${MAX_WORKERS:-8}" \
  --additional-experiments "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver,no_use_multiple_sdk_containers,use_runner_v2" \
  --temp-location "gs://$BUCKET/tmp" --staging-location "gs://$BUCKET/staging"
