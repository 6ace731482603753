#!/usr/bin/env bash
# Fetch a real Apache Kafka broker (KRaft, 4.x) and its runtime jars from Maven Central, for the
# differential tests in tests/interop. Nothing lands in the repository: the jars go to a cache dir.
#
# Usage: scripts/fetch-kafka.sh [LIBS_DIR]
#   LIBS_DIR defaults to ${HEADWATER_KAFKA_HOME:-$HOME/.cache/headwater/kafka-$KAFKA_VERSION}/libs
# Env:   KAFKA_VERSION (default 4.1.1), MAVEN_ARGS_EXTRA (extra mvn flags, e.g. -Dmaven.repo.local=...)
# Idempotent: a marker file written last makes a second run a no-op.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="${KAFKA_VERSION:-4.1.1}"
dependency_plugin="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
libs="${1:-${HEADWATER_KAFKA_HOME:-$HOME/.cache/headwater/kafka-$version}/libs}"
marker="$libs/.complete-kafka-$version"

if [[ -f "$marker" ]]; then
  echo "fetch-kafka: Kafka $version already in $libs ($(find "$libs" -name '*.jar' | wc -l) jars)"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || { echo "fetch-kafka: mvn not found (apt-get install -y maven)" >&2; exit 1; }
command -v java >/dev/null 2>&1 || { echo "fetch-kafka: java not found (Kafka 4.x needs Java 17+)" >&2; exit 1; }

# Fill a staging dir first, then swap it in, so an interrupted run never looks complete.
staging="$libs.partial"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$staging"' EXIT
cp "$here/kafka-pom.xml" "$work/pom.xml"

rm -rf "$staging"
mkdir -p "$staging"

start=$(date +%s)
# shellcheck disable=SC2086  # MAVEN_ARGS_EXTRA is deliberately word-split
mvn -B -q -Dstyle.color=never -f "$work/pom.xml" ${MAVEN_ARGS_EXTRA:-} \
  -Dkafka.version="$version" \
  "$dependency_plugin:copy-dependencies" \
  -DincludeScope=runtime \
  -DoutputDirectory="$staging" \
  2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2  # Maven 3.8 -q still emits colour resets

jars=$(find "$staging" -name '*.jar' | wc -l)
if ! ls "$staging"/kafka_2.13-"$version".jar >/dev/null 2>&1; then
  echo "fetch-kafka: kafka_2.13-$version.jar missing after Maven ran" >&2
  exit 1
fi

rm -rf "$libs"
mv "$staging" "$libs"
date -u +%FT%TZ >"$marker"
echo "fetch-kafka: Kafka $version: $jars jars, $(du -sh "$libs" | cut -f1), in $libs ($(($(date +%s) - start)) s)"
