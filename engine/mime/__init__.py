"""Message parsing: headers, the MIME tree, text, addresses. Never raises on broken mail."""

from engine.mime.addresses import bare_address, domain_of, is_valid_address, parse_address_list
from engine.mime.headers import HeaderList, decode_rfc2047, decode_text
from engine.mime.message import ParsedMessage
from engine.mime.parts import MimePart
from engine.mime.text import TextPart, html_to_text

__all__ = [
    "HeaderList",
    "MimePart",
    "ParsedMessage",
    "TextPart",
    "bare_address",
    "decode_rfc2047",
    "decode_text",
    "domain_of",
    "html_to_text",
    "is_valid_address",
    "parse_address_list",
]
