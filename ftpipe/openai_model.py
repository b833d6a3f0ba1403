"""`OpenAIModel`: the original module's class, same names and parameters, over ftpipe's core.

Each method is a few lines on the core that the Prefect tasks use too. `train` and
`dynamic_train` run the fine-tune flows (Prefect is imported only when they are called), so the
quick methods work without any Prefect server.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from ftpipe import assistants, chat, no_telemetry, resources, sentiment, vision
from ftpipe.client import endpoint_id, make_client
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.errors import InputError
from ftpipe.registry import JobRecord, default_registry
from ftpipe.settings import get_settings

log = logging.getLogger("ftpipe")


class FacadeError(RuntimeError):
    """A method was called with what it cannot use, or a training method failed: the plain
    reason, with the underlying error kept as `cause` (a flow's Prefect traceback is in the
    debug log, not chained onto this one)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def _text(method: str, name: str, value: object) -> str:
    """A text argument as given, or the facade's one error instead of a TypeError deep down."""
    if not isinstance(value, str):
        raise FacadeError(f"{method}: {name} must be text, got {type(value).__name__}")
    return value


def _path(method: str, value: object) -> str | Path:
    """An image path as given (text or a Path), or the facade's one error."""
    if not isinstance(value, str | Path):
        raise FacadeError(f"{method}: image_path must be a path, got {type(value).__name__}")
    return value


def _checked_question(question: object, attempts: object) -> str:
    """The question when the core would ask it; an empty one (or attempts below 1) is the
    facade's one error, raised before anything is sent or logged."""
    text = _text("ask", "question", question)
    try:
        chat.check_request(text, attempts)
    except InputError as error:
        raise FacadeError(str(error), error) from None
    return text


def run_flow(flow: Callable[..., dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    """A flow run in this process on ftpipe's local Prefect API; any failure is one error."""
    no_telemetry()
    from ftpipe.finetune.poll import JobFailed, WaitTimeout
    from ftpipe.flows.prefect_api import local_prefect
    from ftpipe.flows.prepare_dataset import plain_errors

    try:
        with local_prefect(), plain_errors(InputError, JobFailed, WaitTimeout, openai.APIError):
            return flow(**parameters)
    except Exception as error:  # whatever failed, the facade user catches one error
        log.debug("%s failed", getattr(flow, "name", flow), exc_info=error)
        raise FacadeError(" ".join(str(error).split()) or type(error).__name__, error) from None


class OpenAIModel:
    """Chat, vision, assistants and fine-tuning on any OpenAI-compatible endpoint."""

    def __init__(
        self,
        system_instruction: str | None = None,
        model_name: str | None = None,
        assistant_id: str | None = None,
    ) -> None:
        self.system_instruction = system_instruction
        # None: the backend's default (FTPIPE_DEFAULT_MODEL, else what the endpoint trains)
        self.model_name = model_name or get_settings().default_model
        self.assistant_id: str | None = None
        self.client: openai.OpenAI = make_client()
        self.dialogue_log = DialogueLog(default_log_path())
        self.thread_id = self._start_thread()
        if assistant_id:
            self.set_assistant(assistant_id)

    def _start_thread(self) -> str | None:
        """The original opened an Assistants thread on start; endpoints without one are fine."""
        try:
            return self.client.beta.threads.create().id
        except (openai.NotFoundError, openai.PermissionDeniedError) as error:
            log.info("No Assistants threads on this endpoint (%s)", error)
            return None

    # -- models and assistants -------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Model ids the endpoint serves, fine-tuned ones included."""
        return [model.id for model in self.client.models.list()]

    def list_assistants(self) -> list[dict[str, Any]]:
        """The catalogue's assistants merged with the endpoint's own."""
        return [vars(a) for a in assistants.list_assistants(self.client)]

    def set_assistant(self, assistant_id: str) -> dict[str, Any]:
        """Use an assistant's model and instructions; an unknown id is a clear error."""
        chosen = assistants.find_assistant(assistant_id, self.client)
        self.assistant_id = chosen.id
        self.model_name = chosen.model
        self.system_instruction = chosen.instructions
        return vars(chosen)

    # -- chat ------------------------------------------------------------------------------

    def determine_sentiment(self, text: str) -> str:
        """positive, negative or neutral, by the offline VADER analyser."""
        return sentiment.analyse(_text("determine_sentiment", "text", text))

    def ask(
        self,
        question: str,
        attempts: int = 3,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The model's reply; retried on 429/5xx; the exchange goes to the dialogue log. An empty
        question is a FacadeError: it would log a training example without a user message."""
        reply = chat.ask(
            self.client,
            _checked_question(question, attempts),
            model=self.model_name,
            system_instruction=self.system_instruction,
            temperature=temperature,
            max_tokens=max_tokens,
            attempts=attempts,
            sentiment=sentiment.analyse,
            log=self.dialogue_log,
        )
        return reply.text

    # -- vision ----------------------------------------------------------------------------

    def describe_image(
        self,
        image_path: str | Path,
        prompt: str | None = None,
        system_instruction: str | None = None,
    ) -> str:
        """A description of a local image, through the SDK (the assistant's instructions apply
        unless others are given)."""
        instruction = system_instruction or self.system_instruction
        path = _path("describe_image", image_path)
        return vision.describe_image(
            self.client, path, prompt, instruction, model=self.model_name
        ).text

    def describe_image_by_requests(self, image_path: str | Path, prompt: str | None = None) -> str:
        """The same through plain HTTP to the same endpoint."""
        path = _path("describe_image_by_requests", image_path)
        base_url, key = vision.endpoint_and_key(self.client)
        return vision.describe_image_by_requests(
            base_url, key, path, prompt, model=self.model_name
        ).text

    # -- fine-tuning -----------------------------------------------------------------------

    def dynamic_train(self, wait: bool = False) -> str:
        """Fine-tune on the saved dialogues (the loop closes); returns the job id."""
        from ftpipe.flows.finetune import finetune_dialogues

        result = run_flow(
            finetune_dialogues,
            dialogues_dir=str(self.dialogue_log.path.parent),
            model=self._model_to_train("dynamic_train"),
            wait=wait,
        )
        return result["job_id"]

    def _model_to_train(self, method: str) -> str:
        """The model a training method fine-tunes, checked before any flow starts or input is
        read: a typo is the facade's one error, with the closest known names."""
        from ftpipe.catalog import check_model

        try:
            return check_model(self.model_name, source=f"{method}: model_name")
        except InputError as error:
            raise FacadeError(str(error), error) from None

    def train(
        self,
        data: str | Path | None = None,
        data_dir: Path | str | None = None,
        data_file: Path | str | None = None,
        positive: bool = True,
    ) -> str:
        """Fine-tune on texts labelled positive (or negative): `data` is CSV text or the path of
        a CSV file, as in the original; or a folder, or a file."""
        from ftpipe.flows.finetune import finetune
        from ftpipe.prepare.options import PrepareOptions

        model = self._model_to_train("train")
        csv_text, paths = _split_data(data)
        paths += [str(p) for p in (data_dir, data_file) if p]
        if not paths and not csv_text:
            raise ValueError("train needs data (CSV text or a path), data_dir or data_file")
        options = PrepareOptions(
            model=model,
            label="positive" if positive else "negative",
            system_instruction=self.system_instruction,
        )
        result = run_flow(finetune, paths=paths, csv_text=csv_text, options=options, wait=False)
        return result["job_id"]

    def evaluate(self, job_id: str | None = None) -> dict[str, Any]:
        """Compare a finished job's model with its base on the held-out split (default: the
        newest succeeded job in the registry); the result as a dict, also kept with the job."""
        from ftpipe.errors import InputError
        from ftpipe.eval.by_name import evaluate_by_name

        name = job_id or _newest_succeeded_job()
        try:
            return evaluate_by_name(name).model_dump(mode="json")
        except (InputError, openai.APIError) as error:
            raise FacadeError(f"evaluate {name}: {' '.join(str(error).split())}", error) from None

    def main(self) -> dict[str, Any]:
        """The original entry point, as a method too: run the demo."""
        return main()

    def save_job_id(self, job_id: str, description: str, filename: str = "job_ids.json") -> Path:
        """Record the job with its description and write `filename` (under FTPIPE_HOME if
        relative) as the original list of {id, description, created}. An id the endpoint does
        not know is recorded all the same, with a warning, as the original did."""
        registry, where = default_registry(), endpoint_id()
        try:
            job = self.client.fine_tuning.jobs.retrieve(job_id)
        except openai.NotFoundError:
            warnings.warn(
                f"{self.client.base_url} does not know fine-tuning job {job_id!r}; "
                "saving its id anyway",
                stacklevel=2,
            )
            record = JobRecord(job_id, "unknown", self.model_name, created_at=int(time.time()))
        else:
            record = registry.update_from_job(job, where)
        registry.record(
            JobRecord(
                job_id=job_id,
                status=record.status,
                base_model=record.base_model,
                description=description,
                created_at=record.created_at,
                endpoint=where,
            )
        )
        path = Path(filename)
        path = path if path.is_absolute() else get_settings().home / path
        registry.export_job_ids(path)
        return path


def _newest_succeeded_job() -> str:
    """The job `evaluate()` means when given none: the newest that produced a model here."""
    where = endpoint_id()
    for record in default_registry().jobs(endpoint=where):
        if record.status == "succeeded" and record.fine_tuned_model:
            return record.job_id
    raise FacadeError(f"evaluate: no succeeded fine-tuning job in the registry for {where}")


def _split_data(data: str | Path | None) -> tuple[str | None, list[str]]:
    """The original's `data` is CSV text or a CSV file's path: (csv_text, paths)."""
    if data is None:
        return None, []
    if isinstance(data, Path) or ("\n" not in data and Path(data).is_file()):
        return None, [str(data)]
    return data, []


DEMO_QUESTIONS = (
    "What time does the first ferry leave on weekdays?",
    "Can I bring my bicycle on board?",
    "How much is a single adult ticket?",
    "Do you sell tickets on the boat?",
    "Are dogs allowed on the ferry?",
    "Is the ferry running during a storm warning?",
    "Where can I park near the terminal?",
    "How long is the crossing to the island?",
    "Can I get a refund for an unused ticket?",
    "Is there wheelchair access?",
    "When does the last ferry return from the island?",
    "Do you offer a monthly pass?",
)


def main(echo: Any = print) -> dict[str, Any]:
    """What the original module's main did: models, assistants, a reply, both trainings, the
    saved job id and an image description, each step printed."""
    model = OpenAIModel()
    results: dict[str, Any] = {"models": model.list_models()}
    echo(f"models: {', '.join(results['models'][:6])} ... ({len(results['models'])} in all)")
    results["assistants"] = [a["id"] for a in model.list_assistants()]
    echo(f"assistants: {', '.join(results['assistants'])}")
    model.set_assistant("ferry-support")
    replies = [model.ask(question) for question in DEMO_QUESTIONS]
    results["reply"] = replies[0]
    echo(f"asked {len(replies)} questions; first reply: {replies[0]}")
    results["dynamic_train_job"] = model.dynamic_train()
    echo(f"dynamic_train job (saved dialogues): {results['dynamic_train_job']}")
    results["train_job"] = model.train(data_file=str(resources.sample("positive_feedback.csv")))
    echo(f"train job (positive feedback): {results['train_job']}")
    saved = model.save_job_id(results["train_job"], "demo: positive feedback")
    results["saved_job_ids"] = str(saved)
    echo(f"saved job id {results['train_job']} in {saved}")
    image = resources.sample("images", "harbour.png")
    try:
        results["image_description"] = model.describe_image(image)
    except openai.BadRequestError as error:  # a text-only model (e.g. the embedded SmolLM2)
        results["image_description"] = None
        echo(f"image {image.name}: not described, {model.model_name} refused it: {error.message}")
    else:
        echo(f"image {image.name}: {results['image_description']}")
    return results
