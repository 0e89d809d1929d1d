"""Wire constants of the Sendmail milter protocol, version 6.

Values are those of libmilter's ``mfdef.h`` as restated in our protocol notes (spec §4 to
§6, ``docs/milter-protocol.md``); names drop the ``SMFIC_``/``SMFIR_``/
``SMFIF_``/``SMFIP_`` prefixes because the enum already says which family they belong to.
"""

from __future__ import annotations

from enum import Enum, IntEnum, IntFlag
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MAX_BODY_CHUNK",
    "MILTER_VERSION",
    "MILTER_VERSION_MIN",
    "NO_REPLY_FLAG",
    "NO_REPLY_MASK",
    "NO_STEP_FLAG",
    "SMFI_INTERNAL",
    "V1_ACTIONS",
    "V1_PROTOCOL",
    "ActionFlag",
    "Command",
    "Family",
    "MacroStage",
    "ProtocolFlag",
    "Response",
]

MILTER_VERSION: Final = 6
# libmilter refuses MTAs older than protocol 2 (spec §10 item 16); anything newer than 6 is
# negotiated down to 6, as libmilter does.
MILTER_VERSION_MIN: Final = 2
# Largest accepted value of a frame's length field (command byte included).  Postfix body
# frames read 65536 (spec §2, §10 item 1), so the cap must sit well above 64 KiB.
DEFAULT_MAX_FRAME: Final = 1 << 20
# libmilter's MILTER_CHUNK_SIZE: the most body bytes one BODY/REPLBODY frame should carry.
MAX_BODY_CHUNK: Final = 65535
# Protocol bits reserved for MTA/libmilter internals (MDS size negotiation); a filter must
# never set them (spec §2).
SMFI_INTERNAL: Final = 0x70000000


class Command(bytes, Enum):
    """MTA→filter command codes (SMFIC_*)."""

    # Enum's default __hash__ is a Python-level function; commands key the per-frame table
    # lookups, and hashing as the bytes value (consistent with bytes equality) is C-speed.
    __hash__ = bytes.__hash__

    OPTNEG = b"O"
    MACRO = b"D"
    CONNECT = b"C"
    HELO = b"H"
    MAIL = b"M"
    RCPT = b"R"
    DATA = b"T"
    HEADER = b"L"
    EOH = b"N"
    BODY = b"B"
    BODYEOB = b"E"
    ABORT = b"A"
    QUIT = b"Q"
    QUIT_NC = b"K"
    UNKNOWN = b"U"


class Response(bytes, Enum):
    """Filter→MTA reply codes (SMFIR_*)."""

    ACCEPT = b"a"
    CONTINUE = b"c"
    REJECT = b"r"
    TEMPFAIL = b"t"
    DISCARD = b"d"
    REPLYCODE = b"y"
    PROGRESS = b"p"
    SKIP = b"s"
    QUARANTINE = b"q"
    ADDHEADER = b"h"
    INSHEADER = b"i"
    CHGHEADER = b"m"
    ADDRCPT = b"+"
    ADDRCPT_PAR = b"2"
    DELRCPT = b"-"
    CHGFROM = b"e"
    REPLBODY = b"b"
    SETSYMLIST = b"l"
    SHUTDOWN = b"4"
    CONN_FAIL = b"f"
    OPTNEG = b"O"


class ActionFlag(IntFlag):
    """SMFIF_* bits: which modifications the filter may request at end of message."""

    NONE = 0
    ADDHDRS = 0x001
    CHGBODY = 0x002
    ADDRCPT = 0x004
    DELRCPT = 0x008
    CHGHDRS = 0x010
    QUARANTINE = 0x020
    CHGFROM = 0x040
    ADDRCPT_PAR = 0x080
    SETSYMLIST = 0x100


class ProtocolFlag(IntFlag):
    """SMFIP_* bits.  Note the negative sense: a set NO*/NR* bit turns a step *off*."""

    NONE = 0
    NOCONNECT = 0x000001
    NOHELO = 0x000002
    NOMAIL = 0x000004
    NORCPT = 0x000008
    NOBODY = 0x000010
    NOHDRS = 0x000020
    NOEOH = 0x000040
    NR_HDR = 0x000080
    NOUNKNOWN = 0x000100
    NODATA = 0x000200
    SKIP = 0x000400
    RCPT_REJ = 0x000800
    NR_CONN = 0x001000
    NR_HELO = 0x002000
    NR_MAIL = 0x004000
    NR_RCPT = 0x008000
    NR_DATA = 0x010000
    NR_UNKN = 0x020000
    NR_EOH = 0x040000
    NR_BODY = 0x080000
    HDR_LEADSPC = 0x100000


# libmilter reads an offered mask of 0 as "a version-1 MTA" and substitutes these.
V1_ACTIONS: Final = (
    ActionFlag.ADDHDRS | ActionFlag.CHGBODY | ActionFlag.ADDRCPT | ActionFlag.DELRCPT
)
V1_PROTOCOL: Final = (
    ProtocolFlag.NOCONNECT
    | ProtocolFlag.NOHELO
    | ProtocolFlag.NOMAIL
    | ProtocolFlag.NORCPT
    | ProtocolFlag.NOBODY
    | ProtocolFlag.NOHDRS
)

# Which SMFIP_NR_* bit waives the reply to each command.  OPTNEG and BODYEOB always need a
# reply and MACRO/ABORT/QUIT/QUIT_NC never get one, so they are absent (spec §5.3).
NO_REPLY_FLAG: Final = MappingProxyType(
    {
        Command.CONNECT: ProtocolFlag.NR_CONN,
        Command.HELO: ProtocolFlag.NR_HELO,
        Command.MAIL: ProtocolFlag.NR_MAIL,
        Command.RCPT: ProtocolFlag.NR_RCPT,
        Command.DATA: ProtocolFlag.NR_DATA,
        Command.UNKNOWN: ProtocolFlag.NR_UNKN,
        Command.HEADER: ProtocolFlag.NR_HDR,
        Command.EOH: ProtocolFlag.NR_EOH,
        Command.BODY: ProtocolFlag.NR_BODY,
    }
)
NO_REPLY_MASK: Final = ProtocolFlag(sum(NO_REPLY_FLAG.values()))

# Which SMFIP_NO* bit asks the MTA not to send each command at all.
NO_STEP_FLAG: Final = MappingProxyType(
    {
        Command.CONNECT: ProtocolFlag.NOCONNECT,
        Command.HELO: ProtocolFlag.NOHELO,
        Command.MAIL: ProtocolFlag.NOMAIL,
        Command.RCPT: ProtocolFlag.NORCPT,
        Command.DATA: ProtocolFlag.NODATA,
        Command.UNKNOWN: ProtocolFlag.NOUNKNOWN,
        Command.HEADER: ProtocolFlag.NOHDRS,
        Command.EOH: ProtocolFlag.NOEOH,
        Command.BODY: ProtocolFlag.NOBODY,
    }
)


class MacroStage(IntEnum):
    """Stage numbers used in the macro lists of the OPTNEG reply (SMFIM_*)."""

    CONNECT = 0
    HELO = 1
    MAIL = 2
    RCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6


class Family(bytes, Enum):
    """Address family byte of the CONNECT command (SMFIA_*)."""

    INET = b"4"
    INET6 = b"6"
    UNIX = b"L"
    UNKNOWN = b"U"
