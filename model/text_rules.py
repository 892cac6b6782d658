"""Text rules shared by training and serving (torch-free): what a tweet's handles and links become.

TweetEval replaces user handles by "@user"; links carry no sentiment. The tokenizer's normaliser
(model/tokenizer.py) applies the same patterns, so a served tweet looks like the training tweets."""

from __future__ import annotations

import re

HANDLE_PATTERN, HANDLE_TOKEN = r"@\w+", "@user"
LINK_PATTERN, LINK_TOKEN = r"https?://\S*|www\.\S+", "http"

_HANDLE, _LINK = re.compile(HANDLE_PATTERN), re.compile(LINK_PATTERN)


def normalise_handles_and_links(text: str) -> str:
    return _HANDLE.sub(HANDLE_TOKEN, _LINK.sub(LINK_TOKEN, text))
