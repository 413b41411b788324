#!/usr/bin/env bash
# Build the tileseg image and Flex Template once per TAG, then run tileseg on Dataflow GPU workers.
# deploy/launch.sh --help says how; README.md ("Run on Dataflow") says why.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/launch.sh [options] INPUT OUTPUT [tileseg options]
       deploy/launch.sh [options] --build-only

Runs tileseg on Dataflow GPU workers from the Flex Template gs://$BUCKET/templates/tileseg-$TAG.json.
The image (which launches the template and runs the workers) and the template are built only when
this TAG has none yet, or with --rebuild.

  INPUT, OUTPUT     gs:// glob of the tiles and gs:// output folder, e.g.
                    'gs://my-bucket/tiles/**/*.tif' gs://my-bucket/tileseg-out (quote the glob)
  tileseg options   passed on as template parameters and checked against deploy/metadata.json first:
                    --model gs://... --precision auto|float32|bfloat16|float16 --batch_size N
                    --stitch overlap|blend --bands 3,2,1 --patch_size N --halo N --patches_per_block N
                    --overwrite[=true|false] --max_tile_pixels N --radiometry card|stretch|none --landing PROFILE --gsd M --model_copies N --run_id ID

options:
  --rebuild         build the image and the template even if they exist for this TAG
  --build-only      build what is missing (or everything with --rebuild) and stop
  --smoke-test      after building, run deploy/gpu_check.py in the image on this machine's GPU
                    (needs docker, an NVIDIA GPU and `gcloud auth configure-docker $REGION-docker.pkg.dev`);
                    Cloud Build runs the same check on its CPU with --allow-cpu
  --dry-run         print the gcloud/docker commands instead of running them
  -h, --help        this help

environment:
  PROJECT, REGION, BUCKET   required: Google Cloud project, Dataflow region, bucket for templates/tmp/staging
  TAG                       image and template tag (default: the git commit, plus -dirty-TIME for local changes)
  REPOSITORY                Artifact Registry Docker repository in REGION (default: tileseg)
  MACHINE_TYPE              worker machine type (default: g2-standard-8)
  GPU_TYPE, GPU_COUNT       worker GPUs (default: nvidia-l4, 1)
  MAX_WORKERS               most workers (default: 8)
  PYTHON                    python3 that runs deploy/render.py (default: python3)

nightly schedule, after a build: PROJECT=... REGION=... BUCKET=... TAG=... SCHEDULER_SA=... python3 deploy/render.py
EOF
}

REBUILD=0 BUILD_ONLY=0 SMOKE=0 DRY_RUN=0
ARGS=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --rebuild) REBUILD=1 ;;
    --build-only) BUILD_ONLY=1 ;;
    --smoke-test) SMOKE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    *) ARGS+=("$1") ;;  # INPUT OUTPUT and tileseg options, checked by deploy/render.py below
  esac
  shift
done

: "${PROJECT:?set PROJECT (deploy/launch.sh --help)}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
MACHINE_TYPE=${MACHINE_TYPE:-g2-standard-8}
GPU_TYPE=${GPU_TYPE:-nvidia-l4}
GPU_COUNT=${GPU_COUNT:-1}
MAX_WORKERS=${MAX_WORKERS:-8}
REPOSITORY=${REPOSITORY:-tileseg}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."

run() {
  if ((DRY_RUN)); then printf '%q ' "$@"; echo; else "$@"; fi
}

# Parameters first: a typo fails here, before anything is built or launched.
PARAM_FLAGS=()
if ((!BUILD_ONLY)); then
  if ((${#ARGS[@]} < 2)); then
    echo "launch.sh: give INPUT and OUTPUT (or --build-only); deploy/launch.sh --help" >&2
    exit 2
  fi
  if ! flags=$("$PYTHON" deploy/render.py params "${ARGS[@]}"); then exit 2; fi
  mapfile -t PARAM_FLAGS <<<"$flags"
elif ((${#ARGS[@]})); then
  echo "launch.sh: --build-only takes no INPUT/OUTPUT or tileseg options (got ${ARGS[*]})" >&2
  exit 2
fi

if [[ -z ${TAG:-} ]]; then
  TAG=$(git rev-parse --short HEAD 2>/dev/null) || { echo "launch.sh: not a git checkout: set TAG" >&2; exit 2; }
  # Local changes to anything the image is built from get their own tag, so they are never
  # launched under the commit's (already built) image.
  built_from=(constraints.txt setup.py pipelines transforms model common training deploy)
  if ! git diff --quiet HEAD -- "${built_from[@]}" || [[ -n $(git ls-files --others --exclude-standard -- "${built_from[@]}") ]]; then
    TAG="$TAG-dirty-$(date +%Y%m%d%H%M%S)"
    echo "launch.sh: local changes: building them as TAG=$TAG" >&2
  fi
fi
IMAGE="$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/tileseg:$TAG"
TEMPLATE="gs://$BUCKET/templates/tileseg-$TAG.json"
# Beam is pinned in constraints.txt only; the image is built with that version (and checks it).
BEAM_VERSION=$(sed -n 's/^apache-beam==//p' constraints.txt)
[[ -n $BEAM_VERSION ]] || { echo "launch.sh: no apache-beam==VERSION line in constraints.txt" >&2; exit 2; }

build_image=$REBUILD build_template=$REBUILD
if ((!REBUILD)); then
  gcloud artifacts docker images describe "$IMAGE" --project "$PROJECT" >/dev/null 2>&1 || build_image=1
  ((build_image)) || gcloud storage objects describe "$TEMPLATE" --project "$PROJECT" >/dev/null 2>&1 || build_template=1
fi
if ((build_image)); then
  # --config only: gcloud builds submit refuses --tag together with --config; the image name is a
  # substitution of deploy/cloudbuild.yaml, which also runs gpu_check.py on the CPU before pushing.
  run gcloud builds submit --project "$PROJECT" --region "$REGION" --config deploy/cloudbuild.yaml \
    --substitutions "_IMAGE=$IMAGE,_BEAM_VERSION=$BEAM_VERSION" .
  build_template=1
fi
if ((build_template)); then
  run gcloud dataflow flex-template build "$TEMPLATE" --project "$PROJECT" \
    --image "$IMAGE" --sdk-language PYTHON --metadata-file deploy/metadata.json
fi
if ((SMOKE)); then
  run docker run --rm --gpus all --entrypoint python "$IMAGE" /opt/tileseg/deploy/gpu_check.py
fi
if ((BUILD_ONLY)); then
  echo "launch.sh: image $IMAGE, template $TEMPLATE (TAG=$TAG)"
  exit 0
fi

# Workers: one GPU each, sdk_container_image = the template's own image (everything installed, so
# workers install nothing either). No no_use_multiple_sdk_containers: Dataflow then starts one SDK
# process per vCPU, and this pipeline's reads, stitching and COG writes are CPU work that needs all
# of them; the processes share the GPU (TensorFlow memory growth, the model handler's sharing), see
# README.md "Run on Dataflow".
JOB="tileseg-$(date +%Y%m%d-%H%M%S)"
run gcloud dataflow flex-template run "$JOB" --project "$PROJECT" --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE" \
  "${PARAM_FLAGS[@]}" --parameters "sdk_container_image=$IMAGE" \
  --worker-machine-type "$MACHINE_TYPE" --max-workers "$MAX_WORKERS" \
  --additional-experiments "worker_accelerator=type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver,use_runner_v2" \
  --temp-location "gs://$BUCKET/tmp" --staging-location "gs://$BUCKET/staging"
echo "launch.sh: $( ((DRY_RUN)) && echo "would launch" || echo launched) $JOB from $TEMPLATE (TAG=$TAG)"
