// Renders the daemon's status reply (see Server::status_json and
// docs/protocol.md) as the table `jiffy status` prints.
#pragma once

#include <string>

#include "proto/message.h"

namespace jiffy {

// REQUIRES: reply is a status_reply message. Pure.
std::string render_status(const proto::Json& reply);

}  // namespace jiffy
