// The envelope decoder behind DecodeEnvelope (envelope.h), for the core's
// own hot paths.
#ifndef TIERCACHE_CORE_ENVELOPE_INTERNAL_H_
#define TIERCACHE_CORE_ENVELOPE_INTERNAL_H_

#include <string_view>

#include "tiercache/envelope.h"
#include "tiercache/status.h"

namespace tiercache::envelope_internal {

// DecodeEnvelope(in, verify_checksum), written into *out (left as it was
// on an error): the same checks, the same errors.
Status DecodeEnvelopeInto(std::string_view in, bool verify_checksum, EnvelopeView* out);

}  // namespace tiercache::envelope_internal

#endif  // TIERCACHE_CORE_ENVELOPE_INTERNAL_H_
