"""The built-in modules, one file each. The order here is documentation only: execution
order comes from stages, priorities and declared dependencies."""

from __future__ import annotations

from engine.modules.arc import Arc
from engine.modules.auth_results import AuthResults
from engine.modules.base import Module, ModuleContext, check
from engine.modules.bayes import Bayes
from engine.modules.dkim import Dkim
from engine.modules.dkim_signing import DkimSigning
from engine.modules.dmarc import Dmarc
from engine.modules.greylist import Greylist
from engine.modules.gtube import Gtube
from engine.modules.headers import Headers
from engine.modules.hfilter import Hfilter
from engine.modules.milter_headers import MilterHeaders
from engine.modules.mime_types import MimeTypes
from engine.modules.received import Received
from engine.modules.regexp import Regexp
from engine.modules.spf import Spf
from engine.modules.whitelist import Whitelist

BUILTIN_MODULES: tuple[type[Module], ...] = (
    Gtube,
    Greylist,
    Headers,
    MimeTypes,
    Received,
    Hfilter,
    Regexp,
    Spf,
    Dkim,
    Arc,
    Dmarc,
    Whitelist,
    Bayes,
    DkimSigning,
    AuthResults,
    MilterHeaders,
)

__all__ = ["BUILTIN_MODULES", "Module", "ModuleContext", "check"]
