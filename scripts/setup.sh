#!/usr/bin/env bash
# Installs what tiercache needs to build, test and run its local servers.
# Idempotent: apt runs only for packages that are missing, Maven only when the
# Kafka jars are missing. A second run is fast and quiet.
#
#   scripts/setup.sh            install what is missing
#   TIERCACHE_SETUP_NO_BROWSER=1 scripts/setup.sh   the same without chromium (make demo)
#
# Environment: TIERCACHE_DEPS_DIR (default <repo>/.deps) holds the Kafka jars;
#              TIERCACHE_MAVEN_ARGS adds flags to mvn (e.g. "-s my-settings.xml").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
deps_dir="${TIERCACHE_DEPS_DIR:-$repo/.deps}"
kafka_lib="$deps_dir/kafka/lib"

die() { echo "setup: $*" >&2; exit 1; }

packages=(
  g++ cmake ninja-build pkg-config make
  libgtest-dev libgmock-dev libbenchmark-dev
  libhiredis-dev librdkafka-dev libpq-dev libpqxx-dev nlohmann-json3-dev
  redis-server redis-tools postgresql-15
  openjdk-17-jre-headless maven kcat
  iproute2 procps util-linux
  libcpp-httplib-dev curl python3 gnuplot-nox
  prometheus-cpp-dev prometheus libcli11-dev
)
# Headless Chromium checks the demo's report page in the tests; `make demo`
# itself does not need it (TIERCACHE_SETUP_NO_BROWSER=1).
[ "${TIERCACHE_SETUP_NO_BROWSER:-0}" = 1 ] || packages+=(chromium)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log="$(mktemp)"
  # The Debian redis-server/postgresql packages try to start system services; we
  # run our own servers, so forbid service starts during the install.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 15 "$log" >&2
    die "apt-get install failed (log above): check the package mirror is reachable, then rerun make setup"
  fi
  rm -f "$log"
fi

command -v java >/dev/null 2>&1 || die "Java is missing (no 'java' on PATH); install openjdk-17-jre-headless (make setup does it as root)"
java -version 2>&1 | head -n1 | grep -Eq '"(1[7-9]|2[0-9])' \
  || die "Java 17 or newer is needed for Kafka 3.9.1; found: $(java -version 2>&1 | head -n1)"

if [ ! -f "$kafka_lib/kafka_2.13-3.9.1.jar" ] || [ ! -f "$kafka_lib/slf4j-reload4j-1.7.36.jar" ]; then
  command -v mvn >/dev/null 2>&1 || die "Maven is missing (no 'mvn' on PATH); install maven (make setup does it as root)"
  echo "setup: fetching Apache Kafka 3.9.1 jars with Maven into $kafka_lib"
  mkdir -p "$kafka_lib.tmp"
  log="$(mktemp)"
  # shellcheck disable=SC2086  # TIERCACHE_MAVEN_ARGS: extra mvn flags, e.g. "-s settings.xml"
  if ! mvn -q -B -Dstyle.color=never ${TIERCACHE_MAVEN_ARGS:-} -f "$here/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$kafka_lib.tmp" >"$log" 2>&1; then
    grep -m1 -E "ERROR" "$log" | sed "s/\x1b\[[0-9;]*m//g" >&2 || tail -n 3 "$log" >&2
    rm -rf "$kafka_lib.tmp" "$log"
    die "Maven could not download the Kafka jars (see above); check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml), then rerun make setup"
  fi
  rm -f "$log"
  rm -rf "$kafka_lib" && mv "$kafka_lib.tmp" "$kafka_lib"
fi
exit 0
