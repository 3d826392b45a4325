#include "redis/reply_reader.h"

#include <hiredis/hiredis.h>

#include <memory>
#include <new>
#include <string>

namespace tiercache::redis::internal {
namespace {

// hiredis builds our Reply directly (no redisReply, no copy): the root is
// heap-allocated and owned by whoever takes it from redisReaderGetReply;
// children live inside their parent's `elements`. These are C callbacks: they
// catch everything and report failure as nullptr.
Reply* Place(const redisReadTask* task) {
  if (task->parent == nullptr) return new (std::nothrow) Reply;
  auto* parent = static_cast<Reply*>(task->parent->obj);
  return &parent->elements[static_cast<size_t>(task->idx)];
}

void* CreateString(const redisReadTask* task, char* str, size_t len) noexcept {
  try {
    Reply* r = Place(task);
    if (r == nullptr) return nullptr;
    r->type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::kError
              : task->type == REDIS_REPLY_STATUS ? Reply::Type::kStatus
                                                 : Reply::Type::kString;
    r->str.assign(str, len);
    return r;
  } catch (...) {
    return nullptr;
  }
}

void* CreateArray(const redisReadTask* task, int elements) noexcept {
  try {
    Reply* r = Place(task);
    if (r == nullptr) return nullptr;
    r->type = Reply::Type::kArray;
    r->elements.resize(static_cast<size_t>(elements));
    return r;
  } catch (...) {
    return nullptr;
  }
}

void* CreateInteger(const redisReadTask* task, long long value) noexcept {
  Reply* r = Place(task);
  if (r == nullptr) return nullptr;
  r->type = Reply::Type::kInteger;
  r->integer = value;
  return r;
}

void* CreateNil(const redisReadTask* task) noexcept {
  Reply* r = Place(task);
  if (r != nullptr) r->type = Reply::Type::kNil;
  return r;
}

void FreeReply(void* reply) noexcept { delete static_cast<Reply*>(reply); }

redisReplyObjectFunctions kReplyFunctions = {CreateString, CreateArray, CreateInteger, CreateNil, FreeReply};

}  // namespace

redisReader* NewReplyReader() { return redisReaderCreateWithFunctions(&kReplyFunctions); }

bool FeedReplies(redisReader* reader, const char* bytes, size_t n, std::string* error) {
  if (redisReaderFeed(reader, bytes, n) == REDIS_OK) return true;
  *error = "protocol error";
  return false;
}

ReplyState NextReply(redisReader* reader, Reply* out, std::string* error) {
  void* raw = nullptr;
  if (redisReaderGetReply(reader, &raw) != REDIS_OK) {
    *error = std::string("protocol error: ") + reader->errstr;
    return ReplyState::kProtocolError;
  }
  if (raw == nullptr) return ReplyState::kNeedMore;
  std::unique_ptr<Reply> root(static_cast<Reply*>(raw));
  *out = std::move(*root);
  return ReplyState::kReply;
}

Result<std::vector<Reply>> ParseReplies(const std::vector<std::string_view>& chunks) {
  std::unique_ptr<redisReader, void (*)(redisReader*)> reader(NewReplyReader(), redisReaderFree);
  if (!reader) return Status::Internal("cannot create a reader");
  std::vector<Reply> out;
  std::string error;
  for (std::string_view chunk : chunks) {
    if (!FeedReplies(reader.get(), chunk.data(), chunk.size(), &error)) return Status::Internal(error);
    for (Reply reply;;) {
      const ReplyState state = NextReply(reader.get(), &reply, &error);
      if (state == ReplyState::kProtocolError) return Status::Internal(error);
      if (state == ReplyState::kNeedMore) break;
      out.push_back(std::move(reply));
    }
  }
  return out;
}

}  // namespace tiercache::redis::internal
