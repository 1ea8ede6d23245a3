#!/usr/bin/env bash
# Installs Stanford CoreNLP 3.6.0 for the SPICE metric (and so SPIDEr) into pycocoevalcap.
#
# pycocoevalcap's SPICE needs stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar in
# its spice/lib folder. pycocoevalcap would download them on first use; adc_jax never lets it (a
# failed download in the middle of an evaluation helps nobody), and reports SPICE as null with a
# note instead. Run this once, on a machine with internet access, in the Python environment that
# runs adc_jax:
#
#   bash tools/get_spice_models.sh            # uses `python` on PATH
#   PYTHON=/path/to/venv/bin/python bash tools/get_spice_models.sh
#   CORENLP_URL=https://mirror/stanford-corenlp-full-2015-12-09.zip bash tools/get_spice_models.sh
#
# It downloads the same archive as pycocoevalcap/spice/get_stanford_models.py
# (stanford-corenlp-full-2015-12-09.zip, about 400 MB), extracts the two jars into
# <pycocoevalcap>/spice/lib and removes the archive. Nothing is done if both jars are present.
# Check with:  python -c "from adc_jax.metrics.captioning import spice_status; print(spice_status())"
#
# SPICE then needs Java (8 or newer; adc_jax passes the --add-opens options Java 17 needs) and
# about 8 GB of memory for its JVM.
set -euo pipefail

PYTHON="${PYTHON:-python}"
CORENLP="stanford-corenlp-full-2015-12-09"
JAR="stanford-corenlp-3.6.0"
URL="${CORENLP_URL:-http://nlp.stanford.edu/software/${CORENLP}.zip}"

SPICE_DIR="$("$PYTHON" -c 'import importlib.util as u; print(list(u.find_spec("pycocoevalcap.spice").submodule_search_locations)[0])')"
LIB_DIR="${SPICE_DIR}/lib"

if [[ -f "${LIB_DIR}/${JAR}.jar" && -f "${LIB_DIR}/${JAR}-models.jar" ]]; then
  echo "Stanford CoreNLP 3.6.0 is already installed in ${LIB_DIR}."
  exit 0
fi

command -v unzip >/dev/null || { echo "error: 'unzip' is needed; install it." >&2; exit 1; }

TMP_DIR="$(mktemp -d)"
trap 'rm -rf "${TMP_DIR}"' EXIT

echo "Downloading ${URL} (about 400 MB) ..."
if command -v curl >/dev/null; then
  curl -fL --retry 3 -o "${TMP_DIR}/${CORENLP}.zip" "${URL}"
elif command -v wget >/dev/null; then
  wget -O "${TMP_DIR}/${CORENLP}.zip" "${URL}"
else
  echo "error: neither curl nor wget is available." >&2
  exit 1
fi

echo "Extracting ${JAR}.jar and ${JAR}-models.jar into ${LIB_DIR} ..."
unzip -q -o -j "${TMP_DIR}/${CORENLP}.zip" \
  "${CORENLP}/${JAR}.jar" "${CORENLP}/${JAR}-models.jar" -d "${TMP_DIR}/jars"
mkdir -p "${LIB_DIR}"
mv "${TMP_DIR}/jars/${JAR}.jar" "${TMP_DIR}/jars/${JAR}-models.jar" "${LIB_DIR}/"
echo "Done: SPICE is available."
