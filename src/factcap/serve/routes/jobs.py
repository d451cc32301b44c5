"""``/v1/jobs``: caption a dataset under the data root in the background."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from factcap.serve.jobs import DatasetJob, Jobs
from factcap.serve.schemas import JobOut, JobRequest, json_body_schema, parse_json_body
from factcap.serve.state import check_styles, service
from factcap.serve.uploads import media_type, read_capped

router = APIRouter(tags=["jobs"])


def _jobs(request: Request) -> Jobs:
    jobs = service(request).jobs
    if jobs is None:
        raise HTTPException(404, "dataset jobs are off: start the server with --data-root")
    return jobs


def _find(request: Request, job_id: str) -> DatasetJob:
    job = _jobs(request).jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


@router.post(
    "/v1/jobs", status_code=201, response_model=JobOut, openapi_extra=json_body_schema(JobRequest)
)
async def create_job(request: Request) -> dict[str, Any]:
    """Caption a dataset (``{"path", "styles"?, "instruction"?}``): a folder, image file,
    manifest, tar shard or Parquet file that must resolve inside the data root (403
    otherwise), read streamed like ``factcap caption`` reads it."""
    jobs = _jobs(request)
    if media_type(request) != "application/json":
        raise HTTPException(415, 'send application/json: {"path": "folder/under/data-root"}')
    req = parse_json_body(await read_capped(request, 64 * 1024), JobRequest)
    styles = check_styles(req.styles, service(request).style_names())
    return jobs.submit(req.path, styles, req.instruction).to_dict()


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    """A job's state and progress (``written`` of ``total``)."""
    return _find(request, job_id).to_dict()


@router.get("/v1/jobs/{job_id}/results")
async def job_results(request: Request, job_id: str) -> StreamingResponse:
    """The records written so far, streamed as JSONL (complete lines only)."""
    job = _find(request, job_id)

    def lines() -> Iterator[bytes]:
        with job.results.open("rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield line

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/v1/jobs/{job_id}/report", response_class=HTMLResponse)
async def job_report(request: Request, job_id: str) -> HTMLResponse:
    """The job's HTML report (:func:`factcap.report.build_report`; thumbnails only of
    images inside the data root). While the job runs: a report of the records so far."""
    job = _find(request, job_id)
    root = service(request).data_root

    def build() -> str:
        from factcap.report import build_report

        with tempfile.TemporaryDirectory(prefix="factcap-report-") as folder:
            out = Path(folder) / "report.html"
            build_report(job.results, out_path=out, image_root=root, title=f"factcap job {job.id}")
            return out.read_text(encoding="utf-8")

    return HTMLResponse(await run_in_threadpool(build))


@router.delete("/v1/jobs/{job_id}", response_model=JobOut)
async def delete_job(request: Request, job_id: str) -> JSONResponse:
    """Cancel a job (it stops after its current batch: 202), or forget a finished one and
    delete its results (200)."""
    jobs, job = _jobs(request), _find(request, job_id)
    jobs.cancel(job)
    if job.state in ("queued", "running"):
        return JSONResponse({**job.to_dict(), "cancelling": True}, status_code=202)
    jobs.jobs.pop(job_id, None)
    shutil.rmtree(job.results.parent, ignore_errors=True)
    return JSONResponse({**job.to_dict(), "deleted": True})
