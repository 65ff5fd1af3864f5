"""The scoring HTTP API: thin routes that open a unit of work and call a handler."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.scoring import handlers
from services.scoring.rfm import handlers as customers
from services.scoring.rules.domain import RuleSetBody
from services.scoring.schemas import (
    RescoreRead,
    RfmSummary,
    RuleSetRead,
    RuleSetSaved,
    ScoreRead,
    SimulateIn,
    SimulateRead,
)
from services.scoring.scores import handlers as reading
from services.scoring.store import Rescore, SqlStore
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.clock import Clock
from shared.errors import InvalidInput
from shared.export import EXPORT_PATH, PersonRef
from shared.openapi import problems

Reader = Annotated[Principal, Depends(require_scope("scoring:read"))]
Writer = Annotated[Principal, Depends(require_scope("scoring:write"))]


def rescore_read(job: Rescore) -> RescoreRead:
    return RescoreRead(
        id=job.id,
        version=job.version,
        status=job.status,
        total=job.total,
        done=job.done,
        changed=job.changed,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def router(clock: Clock) -> APIRouter:
    """The routes, reading the time from `clock`."""
    api = APIRouter(tags=["scoring"])

    @api.get("/v1/scoring/rules")
    async def get_rules(principal: Reader, ctx: Context) -> RuleSetRead:
        """The workspace's current rule set (version 0: the built-in default)."""
        async with ctx.uow() as uow:
            rules = await handlers.current_rules(SqlStore(uow.session), principal.workspace)
        return RuleSetRead(
            version=rules.version,
            default=rules.version == 0,
            rules=rules.body.model_dump(mode="json"),
        )

    @api.put("/v1/scoring/rules", status_code=201)
    async def put_rules(principal: Writer, ctx: Context, body: RuleSetBody) -> RuleSetSaved:
        """Save a new rule-set version (422 names every error's path); rescoring starts."""
        async with ctx.uow() as uow:
            job = await handlers.save_rule_set(
                principal.workspace, body.model_dump(mode="json"), SqlStore(uow.session), clock()
            )
        return RuleSetSaved(version=job.version, rescore=rescore_read(job))

    @api.get("/v1/scoring/rescores/{rescore_id}")
    async def get_rescore(rescore_id: str, principal: Reader, ctx: Context) -> RescoreRead:
        """Progress of a rescore."""
        async with ctx.uow() as uow:
            job = await handlers.read_rescore(
                principal.workspace, rescore_id, SqlStore(uow.session)
            )
        return rescore_read(job)

    @api.post("/v1/scoring/simulate", responses=problems(404))
    async def simulate(request: SimulateIn, principal: Reader, ctx: Context) -> SimulateRead:
        """Score one contact, or the last N days' engaged contacts, under proposed rules;
        nothing is saved or published."""
        async with ctx.uow() as uow:
            try:
                result = await reading.simulate(
                    principal.workspace,
                    request.rules.model_dump(mode="json"),
                    request.contact_id,
                    request.days,
                    request.sample,
                    SqlStore(uow.session),
                    clock(),
                )
            except InvalidInput as exc:
                for error in exc.extra.get("errors", []):
                    error["field"] = f"rules.{error['field']}"
                raise
        return SimulateRead.model_validate(result)

    @api.get("/v1/scores/{contact_id}")
    async def explain(contact_id: str, principal: Reader, ctx: Context) -> ScoreRead:
        """A contact's scores with the rules behind them and their decay so far, and its RFM."""
        async with ctx.uow() as uow:
            result = await reading.explain_contact(
                principal.workspace, contact_id, SqlStore(uow.session), clock()
            )
        return ScoreRead.model_validate(result)

    @api.get("/v1/rfm/summary")
    async def rfm_summary(principal: Reader, ctx: Context) -> RfmSummary:
        """How many customers are in each RFM segment and churn-risk band."""
        async with ctx.uow() as uow:
            result = await customers.rfm_summary(principal.workspace, SqlStore(uow.session))
        return RfmSummary.model_validate(result)

    @api.post(EXPORT_PATH)
    async def export_person(
        ref: PersonRef,
        ctx: Context,
        principal: Annotated[Principal, Depends(require_scope("contacts:read"))],
    ) -> dict[str, Any]:
        """Everything scoring holds on a person: attributes seen, scores, ledger, RFM, set aside."""
        async with ctx.uow() as uow:
            return await reading.export_person(
                principal.workspace,
                [ref.contact_id, *ref.merged_ids],
                ref.identity_digests,
                SqlStore(uow.session),
            )

    return api
