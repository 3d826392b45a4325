#include "tiercache/redis/reply.h"

namespace tiercache::redis {

std::string Reply::ToString() const {
  switch (type) {
    case Type::kNil: return "(nil)";
    case Type::kString: return "\"" + str + "\"";
    case Type::kStatus: return str;
    case Type::kInteger: return std::to_string(integer);
    case Type::kError: return "(error) " + str;
    case Type::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < elements.size(); ++i) {
        if (i > 0) out += ", ";
        out += elements[i].ToString();
      }
      return out + "]";
    }
  }
  return "?";
}

}  // namespace tiercache::redis
