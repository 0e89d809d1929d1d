"""DMARC (RFC 7489): the From domain's policy applied to the SPF and DKIM results.

Theory of operation, in three checks:

1. ``dmarc.policy`` (FILTER): finds the RFC5322.From domain and looks up its policy (the
   domain's ``_dmarc`` record, else its organisational domain's, both asked at once)
   while SPF and DKIM run, so the policy is at hand when they finish.
2. ``dmarc.evaluate`` (CLASSIFY, after every filter): reads ``SPF_RESULT`` and
   ``DKIM_RESULTS`` from the stash, aligns them with the From domain (relaxed or strict,
   ``aspf``/``adkim``), and applies ``p``/``sp`` with ``pct`` sampling. It runs in the
   stage after the filters rather than declaring a dependency on ``dkim.verify``: a
   dependency would make the engine refuse to start whenever DKIM is switched off, and
   the stage order already guarantees both results are in. The symbols still count in
   the score (CLASSIFY comes before scoring).
3. ``dmarc.record`` (IDEMPOTENT): adds the message to the per-domain aggregate data in
   the Store, for reports to the record's ``rua`` (RFC 7489 §7.2).

DMARC passes when SPF or DKIM passes for an aligned identifier (§6.6.2). When neither
does and an aligned one failed temporarily, the outcome is DMARC_DNSFAIL: no policy is
applied on a conclusion DNS trouble prevented (§6.6.3 "temperror"). ``pct`` sampling is
deterministic per message (a hash of its Message-ID and From domain), so a retried
message gets the same disposition; a sampled-out message gets the next weaker policy
(§6.6.4): quarantine instead of reject, none (DMARC_POLICY_SOFTFAIL) instead of quarantine.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Final

from engine.auth.dmarc import Discovery, discover, header_from_domain
from engine.auth.psl import aligned, warm_up
from engine.auth.results import (
    DKIM_RESULTS,
    DMARC_RESULT,
    SPF_RESULT,
    DmarcPolicy,
    DmarcResult,
    DmarcVerdict,
    stashed,
)
from engine.auth.sender import SKIP_KEYS, parse_networks, skip_reason
from engine.config.schema import Key, Section, at_least
from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage
from engine.storage import StoreError
from engine.symbols.spec import SymbolSpec
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from engine.task.task import Task

__all__ = ["Dmarc"]

log = logging.getLogger(__name__)

# What dmarc.policy found, for dmarc.evaluate: the From domain (or why there is none)
# and the discovered policy. Private to this module.
_FROM: StashKey[tuple[str, str]] = StashKey("dmarc.from")
_DISCOVERY: StashKey[Discovery] = StashKey("dmarc.discovery")

_SYMBOLS: Final = (
    "DMARC_POLICY_ALLOW",
    "DMARC_POLICY_REJECT",
    "DMARC_POLICY_QUARANTINE",
    "DMARC_POLICY_SOFTFAIL",
    "DMARC_NA",
    "DMARC_BAD_POLICY",
    "DMARC_DNSFAIL",
)
_FAILURE_SYMBOL: Final[dict[DmarcPolicy, str]] = {
    "reject": "DMARC_POLICY_REJECT",
    "quarantine": "DMARC_POLICY_QUARANTINE",
    "none": "DMARC_POLICY_SOFTFAIL",
}
_WEAKER: Final[dict[DmarcPolicy, DmarcPolicy]] = {
    "reject": "quarantine",
    "quarantine": "none",
    "none": "none",
}
_DAY = 86_400.0
# Most DKIM results kept in one aggregate row (a message may carry dozens of signatures).
_MAX_ROW_SIGNATURES = 4


class Dmarc(Module):
    name = "dmarc"
    description = "DMARC (RFC 7489): the From domain's policy, given SPF and DKIM results."
    symbols = (
        SymbolSpec("DMARC_POLICY_ALLOW", -0.5, "dmarc", "DMARC permit policy"),
        SymbolSpec("DMARC_POLICY_REJECT", 2.0, "dmarc", "DMARC reject policy"),
        SymbolSpec("DMARC_POLICY_QUARANTINE", 1.5, "dmarc", "DMARC quarantine policy"),
        SymbolSpec("DMARC_POLICY_SOFTFAIL", 0.1, "dmarc", "DMARC failed"),
        SymbolSpec("DMARC_NA", 0.0, "dmarc", "No DMARC record"),
        SymbolSpec("DMARC_BAD_POLICY", 0.0, "dmarc", "DMARC record is invalid"),
        SymbolSpec("DMARC_DNSFAIL", 0.0, "dmarc", "DMARC DNS failure"),
    )
    settings_schema = Section(
        {
            **SKIP_KEYS,
            "reject_on_policy": Key(
                (bool,),
                False,
                "Reject (forced action) a message that fails DMARC under a reject "
                "policy, whatever its score.",
            ),
            "reporting": Key(
                (bool,),
                False,
                "Keep per-domain aggregate data in the store for domains whose record "
                "asks for reports (rua=), for a report generator to send. Off by default, "
                "as in Rspamd: it costs two Store round trips a message from such a "
                "domain, and milterd does not send the reports itself.",
            ),
            "reporting_ttl": Key(
                (float,),
                7 * _DAY,
                "Seconds a day's aggregate data is kept.",
                check=at_least(_DAY),
            ),
            "reporting_max_domains": Key(
                (int,), 10_000, "Most policy domains recorded per day.", check=at_least(1)
            ),
            "reporting_max_rows": Key(
                (int,),
                1_000,
                "Most distinct rows (source IP, results, disposition) per domain and day; "
                "further ones are counted in one 'overflow' row.",
                check=at_least(1),
            ),
        }
    )

    def setup(self) -> None:
        warm_up()
        self._local = parse_networks(self.ctx.config, ("dmarc", "local_networks"), self.settings)

    def _exempt(self, task: Task) -> bool:
        return bool(skip_reason(task.envelope, self._local, self.settings))

    @check(produces=_SYMBOLS)
    async def policy(self, task: Task) -> None:
        if self._exempt(task):
            return
        task.stash[_FROM] = found = header_from_domain(task.message.headers)
        if found[0]:
            task.stash[_DISCOVERY] = await discover(self.ctx.dns, found[0])

    @check(produces=_SYMBOLS, stage=Stage.CLASSIFY)
    async def evaluate(self, task: Task) -> None:
        if self._exempt(task):
            return
        from_domain, problem = task.stash.get(_FROM, ("", ""))
        if not from_domain and not problem:  # dmarc.policy did not run (settings)
            from_domain, problem = header_from_domain(task.message.headers)
        if not from_domain:
            task.insert_result("DMARC_NA", options=[problem])
            task.stash[DMARC_RESULT] = DmarcResult("none", "", reason=problem)
            return
        found = stashed(task.stash, _DISCOVERY)
        if found is None:
            found = await discover(self.ctx.dns, from_domain)
            task.stash[_DISCOVERY] = found
        task.stash[DMARC_RESULT] = result = _evaluate(task, found)
        _insert(task, found, result)
        if (
            result.disposition == "reject"
            and self.settings["reject_on_policy"]
            and task.is_enabled("DMARC_POLICY_REJECT")
        ):
            message = f"Rejected by the DMARC policy of {result.policy_domain}"
            task.force_action(Action.REJECT, self.name, message)

    @check(produces=(), stage=Stage.IDEMPOTENT)
    async def record(self, task: Task) -> None:
        result = stashed(task.stash, DMARC_RESULT)
        found = stashed(task.stash, _DISCOVERY)
        if (
            not self.settings["reporting"]
            or result is None
            or found is None
            or found.record is None
            or "mailto:" not in found.record.rua.lower()
            or result.result not in ("pass", "fail")
            or not task.envelope.client_addr
        ):
            return
        try:
            await self._record(task, result)
        except StoreError as exc:
            # Reports are statistics: a store outage costs a row, never the message.
            log.warning("dmarc: aggregate data not saved for %s: %s", result.policy_domain, exc)

    async def _record(self, task: Task, result: DmarcResult) -> None:
        """Count the message in ``dmarc:rows:<day>:<domain>`` and ``dmarc:idx:<day>``.

        Layout, bounded in time (every key expires after ``reporting_ttl``) and in size:

        - ``dmarc:idx:<YYYYMMDD>``: policy domain → messages that day, and ``#domains``
          (how many domains); a new domain past ``reporting_max_domains`` is not recorded.
        - ``dmarc:rows:<YYYYMMDD>:<domain>``: report row → messages, and ``#rows``; a new
          row past ``reporting_max_rows`` counts in the ``overflow`` row instead.

        A row is RFC 7489 Appendix C's record: ``source_ip,header_from,disposition,
        dkim_aligned,spf_aligned,spf_domain=spf_result,d=result|d=result``. Two round
        trips: one read, one batched write. Concurrent workers may overshoot a bound by
        one entry each, which keeps it a bound.
        """
        when = task.request.received_at or time.time()
        day = time.strftime("%Y%m%d", time.gmtime(when))
        domain = result.policy_domain
        idx_key, rows_key = f"dmarc:idx:{day}", f"dmarc:rows:{day}:{domain}"
        row = _row(task, result)
        store = self.ctx.store
        ttl = float(self.settings["reporting_ttl"])  # type: ignore[arg-type]
        (seen_domain, domains, _, _), (_, _, seen_row, rows) = await store.hmget_many(
            [idx_key, rows_key], [domain, "#domains", row, "#rows"]
        )
        if seen_domain is None and _count(domains) >= int(self.settings["reporting_max_domains"]):  # type: ignore[call-overload]
            return
        if seen_row is None and _count(rows) >= int(self.settings["reporting_max_rows"]):  # type: ignore[call-overload]
            row_amounts = {"overflow": 1}
        else:
            row_amounts = {row: 1, "#rows": int(seen_row is None)}
        idx_amounts = {domain: 1, "#domains": int(seen_domain is None)}
        await store.hincrby_many({idx_key: idx_amounts, rows_key: row_amounts}, ttl=ttl)


def _count(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


def _evaluate(task: Task, found: Discovery) -> DmarcResult:
    """Alignment and policy for a discovered record (RFC 7489 §6.6.2)."""
    record = found.record
    if found.status != "record" or record is None:
        verdict: DmarcVerdict = "none" if found.status == "none" else found.status  # type: ignore[assignment]
        return DmarcResult(
            verdict, found.from_domain, found.policy_domain, found.org_domain, reason=found.reason
        )
    subdomain = found.policy_domain != found.from_domain
    policy: DmarcPolicy = record.sp if subdomain and record.sp is not None else record.p
    spf_ok, spf_temp, spf_why = _spf_alignment(task, found.from_domain, record.aspf_strict)
    dkim_domain, dkim_temp, dkim_why = _dkim_alignment(task, found.from_domain, record.adkim_strict)
    where = found.policy_domain

    def result(verdict: DmarcVerdict, disposition: DmarcPolicy, reason: str) -> DmarcResult:
        return DmarcResult(
            verdict, found.from_domain, where, found.org_domain, policy, disposition,
            spf_ok, bool(dkim_domain), dkim_domain, reason,
        )  # fmt: skip

    if spf_ok or dkim_domain:
        return result("pass", "none", where)
    if spf_temp or dkim_temp:
        return result("temperror", "none", f"{where} : SPF/DKIM temp error")
    reasons = [r for r in (spf_why, dkim_why) if r]
    disposition = policy
    if policy != "none" and not _sampled_in(task, found.from_domain, record.pct):
        disposition = _WEAKER[policy]
        reasons.append("sampled_out")
    return result("fail", disposition, f"{where} : {', '.join(reasons)}")


def _spf_alignment(task: Task, from_domain: str, strict: bool) -> tuple[bool, bool, str]:
    """(aligned pass, aligned temperror, why not) for the SPF result (RFC 7489 §3.1.2)."""
    spf = stashed(task.stash, SPF_RESULT)
    if spf is None or spf.skipped:
        return False, False, "No valid SPF"
    is_aligned = aligned(spf.domain, from_domain, strict=strict)
    if spf.result == "pass":
        if is_aligned:
            return True, False, ""
        return False, False, f"SPF not aligned ({'strict' if strict else 'relaxed'})"
    return False, spf.result == "temperror" and is_aligned, "No valid SPF"


def _dkim_alignment(task: Task, from_domain: str, strict: bool) -> tuple[str, bool, str]:
    """(first aligned passing d=, an aligned signature failed temporarily, why not) for the
    DKIM results (RFC 7489 §3.1.1)."""
    signatures = task.stash.get(DKIM_RESULTS, [])
    temporary = False
    for sig in signatures:
        if aligned(sig.domain, from_domain, strict=strict):
            if sig.result == "pass":
                return sig.domain, False, ""
            temporary = temporary or sig.result == "temperror"
    if any(sig.result == "pass" for sig in signatures):
        return "", temporary, f"DKIM not aligned ({'strict' if strict else 'relaxed'})"
    return "", temporary, "No valid DKIM"


def _sampled_in(task: Task, from_domain: str, pct: int) -> bool:
    """Whether the policy applies to this message (RFC 7489 §6.6.4 ``pct``): the same
    message always gets the same answer, so a retry is not a new throw of the dice."""
    if pct >= 100:
        return True
    if pct <= 0:
        return False
    message_id = (task.message.headers.get("message-id") or "").strip()
    digest = hashlib.blake2b(f"{message_id}|{from_domain}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < pct


def _insert(task: Task, found: Discovery, result: DmarcResult) -> None:
    if result.result == "pass":
        task.insert_result("DMARC_POLICY_ALLOW", options=[result.policy_domain, str(result.policy)])
    elif result.result == "fail":
        assert result.policy is not None
        options = [result.reason, result.policy]
        if result.disposition != result.policy:
            options.append("sampled_out")
        task.insert_result(_FAILURE_SYMBOL[result.disposition], options=options)
    elif result.result == "temperror":
        task.insert_result("DMARC_DNSFAIL", options=[result.reason])
    elif result.result == "permerror":
        task.insert_result("DMARC_BAD_POLICY", options=[found.reason])
    else:
        task.insert_result("DMARC_NA", options=[found.reason or result.from_domain])


def _row(task: Task, result: DmarcResult) -> str:
    spf = stashed(task.stash, SPF_RESULT)
    spf_part = f"{spf.domain}={spf.result}" if spf is not None else "="
    dkim = "|".join(
        f"{sig.domain}={sig.result}"
        for sig in task.stash.get(DKIM_RESULTS, [])[:_MAX_ROW_SIGNATURES]
    )
    fields = (
        task.envelope.client_addr or "",
        result.from_domain,
        result.disposition if result.result == "fail" else "none",
        "pass" if result.dkim_aligned else "fail",
        "pass" if result.spf_aligned else "fail",
        spf_part,
        dkim,
    )
    return ",".join(f.replace(",", "") for f in fields)
