# Install rules (included by the top-level CMakeLists.txt).
#
#   <prefix>/include/tiercache/...                     public headers
#   <prefix>/lib/libtiercache_<component>.a            static libraries
#   <prefix>/lib/cmake/tiercache/                      find_package(tiercache [COMPONENTS ...])
#   <prefix>/lib/pkgconfig/tiercache[-<part>].pc       pkg-config
#   <prefix>/bin/tiercache, tiercache-outbox-relay     programs
#
# Targets are exported in one file per part, so that a service which needs
# only L1 + Redis loads (and links) neither librdkafka nor libpq:
#   core        tiercache::common l1 redis core   (always; no library beyond libstdc++)
#   kafka       tiercache::events kafka           (librdkafka)
#   outbox      tiercache::outbox                 (libpq; implies kafka)
#   prometheus  tiercache::prometheus             (prometheus-cpp)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(TIERCACHE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tiercache)
set(tiercache_parts_core common l1 redis core)
set(tiercache_parts_kafka events kafka)
set(tiercache_parts_outbox outbox)
set(tiercache_parts_prometheus prometheus)
set(TIERCACHE_INSTALLED_PARTS core kafka outbox)
if(TARGET tiercache_prometheus)
  list(APPEND TIERCACHE_INSTALLED_PARTS prometheus)
endif()

foreach(part IN LISTS TIERCACHE_INSTALLED_PARTS)
  foreach(component IN LISTS tiercache_parts_${part})
    set_target_properties(tiercache_${component} PROPERTIES EXPORT_NAME ${component})
    install(TARGETS tiercache_${component}
      EXPORT tiercache-${part}-targets
      ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
      INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  endforeach()
  install(EXPORT tiercache-${part}-targets
    NAMESPACE tiercache::
    DESTINATION ${TIERCACHE_CMAKE_DIR})
endforeach()

set(tiercache_header_excludes)
if(NOT TARGET tiercache_prometheus)
  list(APPEND tiercache_header_excludes PATTERN prometheus.h EXCLUDE)
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tiercache
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" ${tiercache_header_excludes})

install(TARGETS tiercache-outbox-relay RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET tiercache-cli)
  install(TARGETS tiercache-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/tiercacheConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tiercacheConfig.cmake
  INSTALL_DESTINATION ${TIERCACHE_CMAKE_DIR})
# 0.x: a minor version may break the API, so only the same minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tiercacheConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/tiercacheConfig.cmake
  ${PROJECT_BINARY_DIR}/tiercacheConfigVersion.cmake
  DESTINATION ${TIERCACHE_CMAKE_DIR})

# pkg-config: the libraries are static, so what they link goes in Requires
# (not Requires.private), and each file lists its archives before those of the
# parts it builds on.
set(pc_core_name "tiercache")
set(pc_core_description "tiercache: L1 + Redis Cluster tiered cache")
set(pc_core_requires "")
set(pc_core_libs "-ltiercache_core -ltiercache_redis -ltiercache_l1 -ltiercache_common -pthread")
set(pc_kafka_name "tiercache-kafka")
set(pc_kafka_description "tiercache: invalidation events on Kafka")
set(pc_kafka_requires "tiercache = ${PROJECT_VERSION}, rdkafka")
set(pc_kafka_libs "-ltiercache_kafka -ltiercache_events")
set(pc_outbox_name "tiercache-outbox")
set(pc_outbox_description "tiercache: transactional outbox on PostgreSQL")
set(pc_outbox_requires "tiercache-kafka = ${PROJECT_VERSION}, libpq")
set(pc_outbox_libs "-ltiercache_outbox")
set(pc_prometheus_name "tiercache-prometheus")
set(pc_prometheus_description "tiercache: Prometheus exposition of its metrics")
set(pc_prometheus_requires "tiercache = ${PROJECT_VERSION}, prometheus-cpp-core, prometheus-cpp-pull")
set(pc_prometheus_libs "-ltiercache_prometheus")
# The files find their prefix from where they are (pkgconf's ${pcfiledir}), so
# a tree installed with `cmake --install --prefix DIR` or moved works as is.
file(RELATIVE_PATH PC_PREFIX_FROM_PCFILEDIR "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" PC_PREFIX_FROM_PCFILEDIR "${PC_PREFIX_FROM_PCFILEDIR}")
foreach(part IN LISTS TIERCACHE_INSTALLED_PARTS)
  set(PC_NAME ${pc_${part}_name})
  set(PC_DESCRIPTION ${pc_${part}_description})
  set(PC_REQUIRES ${pc_${part}_requires})
  set(PC_LIBS ${pc_${part}_libs})
  configure_file(${CMAKE_CURRENT_LIST_DIR}/tiercache.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${PC_NAME}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${PC_NAME}.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
