"""The in-memory store's reports, listings and pruning: the SQL store's queries in Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .._money import add_money, normalize_money
from .._states import FINISHED_STATUSES, NodeKind, State
from ._memory_reads import MemoryReads
from ._rows import (
    PRUNE_TABLES,
    CallRecord,
    FanoutChild,
    RunFilter,
    RunRow,
    RunSummaryRow,
    StatAggregate,
    distinct_values,
    utcnow,
)

__all__ = ["MemoryReports"]


@dataclass
class _Sums:
    """Sums of a group of calls, as the SQL aggregates make them."""

    agg: StatAggregate
    first_id: int
    sources: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)

    def add(self, call: CallRecord) -> None:
        agg = self.agg
        agg.provider = max(agg.provider, call.provider)
        batch = call.pricing is not None and call.pricing.batch
        if call.replayed:
            agg.replayed_calls += 1
            agg.batch_replays += batch
            return
        if call.cached:
            agg.cached_calls += 1
            if call.saved is not None:
                agg.saved = call.saved if agg.saved is None else add_money(agg.saved, call.saved)
            return
        if call.is_unanswered and call.cost is not None:  # a charge, not a call
            agg.cost = call.cost if agg.cost is None else add_money(agg.cost, call.cost)
            agg.unanswered = (
                call.cost if agg.unanswered is None else add_money(agg.unanswered, call.cost)
            )
            return
        agg.calls += 1
        agg.batch_calls += batch
        agg.usage = agg.usage + call.usage
        agg.latency_ms += call.latency_ms
        agg.estimated_calls += int(call.estimated)
        if call.cost is None:
            agg.unpriced_calls += 1
        else:
            agg.cost = call.cost if agg.cost is None else add_money(agg.cost, call.cost)
        pricing = call.pricing
        if pricing is not None:
            if pricing.fees is not None:
                agg.fees = pricing.fees if agg.fees is None else add_money(agg.fees, pricing.fees)
            if pricing.source:
                self.sources.add(pricing.source)
            if pricing.model:
                self.models.add(pricing.model)

    def done(self) -> StatAggregate:
        agg = self.agg
        for name in ("cost", "fees", "saved", "unanswered"):
            value = getattr(agg, name)
            if value is not None:
                setattr(agg, name, normalize_money(value))
        for values, attr in ((self.sources, "price_sources"), (self.models, "price_models")):
            least, greatest = (min(values), max(values)) if values else (None, None)
            setattr(agg, attr, distinct_values(least, greatest, len(values)))
        return agg


class MemoryReports(MemoryReads):
    """Reports and retention over ``MemoryData``."""

    def _selected(self, where: RunFilter | None) -> dict[str, RunRow]:
        where = where or RunFilter()
        return {i: r for i, r in self.data.runs.items() if where.matches(r)}

    async def aggregate_stats(self, where: RunFilter | None = None) -> list[StatAggregate]:
        runs = self._selected(where)
        nodes = {(n.run_id, n.step): n for n in self.data.nodes.values()}
        groups: dict[tuple[str, str, str], _Sums] = {}
        for call in self.data.stats:
            run = runs.get(call.run_id)
            if run is None:
                continue
            key = (call.run_id, call.step, call.model)
            if key not in groups:
                node = nodes.get((call.run_id, call.step))
                parent = node.parent if node is not None else None
                agg = StatAggregate(call.run_id, run.workflow, call.step, call.model, "", parent)
                groups[key] = _Sums(agg, call.id or 0)
            groups[key].add(call)

        def order(sums: _Sums) -> tuple[datetime, str, int, int, int, int]:
            # DAG order, as the SQL store sorts: a fan-out child at its group's place, map
            # items in item order, then the node, then the first call
            agg = sums.agg
            node = nodes.get((agg.run_id, agg.step))
            node_id = (node.id or 0) if node is not None else 0
            group = nodes.get((agg.run_id, node.parent)) if node and node.parent else None
            place = (group.id or 0) if group is not None else node_id
            item = node.item_index if node is not None and node.item_index is not None else -1
            return (runs[agg.run_id].created_at, agg.run_id, place, item, node_id, sums.first_id)

        return [sums.done() for sums in sorted(groups.values(), key=order)]

    async def fanout_children(self, where: RunFilter | None = None) -> list[FanoutChild]:
        runs = self._selected(where)
        return [
            FanoutChild(n.run_id, n.parent, n.step, n.model, n.state, n.attempt, n.error)
            for n in self.data.nodes.values()
            if n.run_id in runs
            and n.kind == NodeKind.CHILD
            and n.model is not None
            and n.parent is not None
        ]

    async def run_summaries(
        self, where: RunFilter | None = None, limit: int | None = None
    ) -> list[RunSummaryRow]:
        picked = list(self.newest_first(where or RunFilter()))
        if limit is not None:
            picked = picked[:limit]
        out = []
        for run in picked:
            summary = RunSummaryRow(
                run.id,
                run.workflow,
                run.status,
                run.created_at,
                run.started_at,
                run.finished_at,
                list(run.failed_steps),
                lease_owner=run.lease_owner,
                lease_expires_at=run.lease_expires_at,
            )
            for node in self.data.nodes.values():
                if node.run_id == run.id and node.kind != NodeKind.GROUP:
                    summary.steps += 1
                    summary.steps_completed += node.state == State.COMPLETED
            for call in self.data.stats:
                if call.run_id == run.id:
                    _add_to_summary(summary, call)
            if summary.cost is not None:
                summary.cost = normalize_money(summary.cost)
            out.append(summary)
        return out

    # ── pruning ───────────────────────────────────────────────────────────────

    def _prunable(self, cutoff: datetime, now: datetime) -> list[RunRow]:
        runs = [
            r
            for r in self.data.runs.values()
            if r.status in FINISHED_STATUSES
            and (r.finished_at or r.created_at) < cutoff
            and (r.lease_owner is None or r.lease_expires_at is None or r.lease_expires_at < now)
        ]
        return sorted(runs, key=lambda r: r.created_at)

    async def prune_runs_batch(self, cutoff: datetime, batch_size: int) -> dict[str, int]:
        ids = {r.id for r in self._prunable(cutoff, utcnow())[:batch_size]}
        data = self.data
        counts = dict.fromkeys(PRUNE_TABLES, 0)
        counts["workflow_runs"] = len(ids)
        for run_id in ids:
            del data.runs[run_id]
        gone = [i for i, n in data.nodes.items() if n.run_id in ids]
        for node_id in gone:
            del data.nodes[node_id]
        counts["workflow_nodes"] = len(gone)
        kept_stats = [c for c in data.stats if c.run_id not in ids]
        counts["workflow_step_stats"] = len(data.stats) - len(kept_stats)
        data.stats[:] = kept_stats
        gone_keys = [k for k in data.completions if k[0] in ids]
        for key in gone_keys:
            del data.completions[key]
        counts["workflow_completions"] = len(gone_keys)
        kept_logs = [log for log in data.logs if log.run_id not in ids]
        counts["workflow_debug_logs"] = len(data.logs) - len(kept_logs)
        data.logs[:] = kept_logs
        batches = [k for k, b in data.provider_batches.items() if b.run_id in ids]
        for batch_key in batches:
            del data.provider_batches[batch_key]
        counts["workflow_provider_batches"] = len(batches)
        requests = [k for k in data.batch_requests if k[0] in ids]
        for request in requests:
            del data.batch_requests[request]
        counts["workflow_batch_requests"] = len(requests)
        kept_attempts = [a for a in data.attempts if a.run_id not in ids]
        counts["workflow_attempts"] = len(data.attempts) - len(kept_attempts)
        data.attempts[:] = kept_attempts
        counts["workflow_budgets"] = self.forget_budgets(ids)
        return counts

    def forget_budgets(self, run_ids: set[str]) -> int:
        """Budgets of pruned runs (``MemorySpend``)."""
        return 0

    def count_budgets(self, run_ids: set[str]) -> int:
        """Budgets of these runs (``MemorySpend``)."""
        return 0

    async def prune_debug_logs_batch(self, cutoff: datetime, batch_size: int) -> int:
        old = [log for log in self.data.logs if log.created_at < cutoff][:batch_size]
        gone = {id(log) for log in old}
        self.data.logs[:] = [log for log in self.data.logs if id(log) not in gone]
        return len(old)

    async def count_prunable(
        self, cutoff: datetime | None, log_cutoff: datetime | None
    ) -> dict[str, int]:
        data = self.data
        counts = dict.fromkeys(PRUNE_TABLES, 0)
        ids = set() if cutoff is None else {r.id for r in self._prunable(cutoff, utcnow())}
        counts["workflow_runs"] = len(ids)
        counts["workflow_nodes"] = sum(1 for n in data.nodes.values() if n.run_id in ids)
        counts["workflow_step_stats"] = sum(1 for c in data.stats if c.run_id in ids)
        counts["workflow_completions"] = sum(1 for k in data.completions if k[0] in ids)
        counts["workflow_provider_batches"] = sum(
            1 for b in data.provider_batches.values() if b.run_id in ids
        )
        counts["workflow_batch_requests"] = sum(1 for k in data.batch_requests if k[0] in ids)
        counts["workflow_attempts"] = sum(1 for a in data.attempts if a.run_id in ids)
        counts["workflow_budgets"] = self.count_budgets(ids)
        counts["workflow_debug_logs"] = sum(
            1
            for log in data.logs
            if log.run_id in ids or (log_cutoff is not None and log.created_at < log_cutoff)
        )
        return counts


def _add_to_summary(summary: RunSummaryRow, call: CallRecord) -> None:
    if call.replayed:
        summary.replayed_calls += 1
        return
    if call.cached:  # answered from the response cache: counted apart, as in SQL
        summary.cached_calls += 1
        return
    summary.calls += not call.is_unanswered  # a charge with no answer: cost only, as in SQL
    summary.input_tokens += call.usage.input_tokens
    summary.output_tokens += call.usage.output_tokens
    if call.cost is None:
        summary.unpriced_calls += 1
    else:
        summary.cost = call.cost if summary.cost is None else add_money(summary.cost, call.cost)
