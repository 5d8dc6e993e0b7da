"""The describe reader: images and scanned PDF pages described by the vision profile's model.

When the run's profile (--profile, else the active one) names a `vision_profile`, its model
reads each image (and each PDF page without a text layer, and with page_images=read each picture
on a page with text) instead of Tesseract: the prompt asks for the text on the image verbatim,
then what it shows, and that reply becomes the document's text (evidence points at the page, or
the picture's box on it, as a whole). The choice is made again before each file (RunReader), so
runs, dry runs, routing previews and evaluations read alike and follow setting changes. A
model that cannot see makes each image file a one-line skip; the run goes on. The vision
profile's own fallback profile serves a page its primary cannot (unreachable, timeout...), as
for chunks.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from kg.db import Database
from kg.db.models import Call, Run
from kg.db.scope import scope_of
from kg.errors import (
    MalformedReply,
    NotFoundError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UsageError,
)
from kg.extraction import loaders, ocr
from kg.profiles import storage, views
from kg.profiles.settings import PageImages, ProviderSettings
from kg.providers import build_provider, registry
from kg.providers.base import CheckResult, CheckStatus, Completion, Image, Provider
from kg.providers.base import VisionUnsupported as VisionUnsupported
from kg.routing import fallback

log = logging.getLogger(__name__)

CALLS = cast(Table, Call.__table__)
RUNS = cast(Table, Run.__table__)
# Images are sent as PNG, their longest side at most this many pixels: vision encoders tile
# or shrink larger images anyway, and every tile costs prompt tokens.
MAX_SIDE = 2048
PROMPT = (
    "Read this image.\n"
    "First write every piece of text on it exactly as written (verbatim, one line of the image "
    "per line, in reading order; titles, bullets, labels in boxes, captions). Write nothing "
    "else in this part.\n"
    "Then write a blank line, the word 'Shown:' and what the image shows in plain sentences: "
    "the kind of image, the boxes or objects and how arrows or lines connect them "
    "(A -> B), and what a chart or photo depicts."
)


def _png(image: Any) -> tuple[bytes, int, int]:
    """The image as PNG bytes, upright and at most MAX_SIDE pixels long; its original size."""
    from PIL import Image, ImageOps

    upright = ImageOps.exif_transpose(image) or image
    width, height = upright.size
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        # Transparent pixels are often black underneath: text on them would vanish.
        rgba = upright.convert("RGBA")
        upright = Image.new("RGBA", rgba.size, "white")
        upright.alpha_composite(rgba)
    if upright.mode not in ("RGB", "L"):
        upright = upright.convert("RGB")
    if max(width, height) > MAX_SIDE:
        upright = upright.copy()
        upright.thumbnail((MAX_SIDE, MAX_SIDE))
    buffer = io.BytesIO()
    upright.save(buffer, format="PNG")
    return buffer.getvalue(), width, height


def _failure_kind(exc: ProviderError) -> str:
    """The fallback kind of a failed describe request (kg.profiles.settings.FallbackKind)."""
    if isinstance(exc, ProviderUnavailable):
        return "unreachable"
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, MalformedReply):
        return "invalid"
    return "error"


class Describer:
    """Reads images with the vision profile's model (then its fallback); a loaders.ImageReader.

    Providers are built on first use, so a run without images never talks to the vision server.
    """

    what = "the vision model"

    def __init__(self, chain: list[ProviderSettings], models_dir: Path | None = None,
                 blind: str | None = None, page_images: bool = False) -> None:
        self.chain = chain  # the vision profile, then its fallback when that takes images
        self.models_dir = models_dir
        self.page_images = page_images
        # Once a model is known not to see, each further image is skipped with this reason.
        self.blind = blind
        self._providers: dict[int, Provider] = {}

    def _provider(self, index: int) -> Any:
        if index not in self._providers:
            self._providers[index] = build_provider(self.chain[index], self.models_dir)
        return self._providers[index]

    def describe(self, image: Any, number: int,
                 dpi: int | None = None) -> tuple[ocr.DescribedPage, loaders.ReadCall]:
        """One image or page described; raises ocr.Unreadable with a one-line reason."""
        if self.blind:
            raise ocr.Unreadable(self.blind)
        data, width, height = _png(image)
        for index, settings in enumerate(self.chain):
            try:
                completion: Completion = self._provider(index).describe(
                    PROMPT, Image(data, "image/png"))
            except VisionUnsupported as exc:
                self.blind = exc.message
                raise ocr.Unreadable(exc.message) from None
            except ProviderError as exc:
                if index + 1 < len(self.chain) and fallback.wanted(settings,
                                                                   _failure_kind(exc)):
                    log.warning("vision profile %s failed on page %d (%s): its fallback %s "
                                "describes it", settings.profile_name, number, exc.message,
                                self.chain[index + 1].profile_name)
                    continue
                raise ocr.Unreadable(f"page {number}: {exc.message}") from None
            text = completion.content.strip()
            call = loaders.ReadCall(
                "describe", number, settings.provider, completion.model or settings.model,
                completion.latency_s, settings.profile_name, settings.revision,
                completion.prompt_tokens, completion.completion_tokens,
                completion.thinking_tokens, completion.load_s, completion.prompt_eval_s,
                completion.eval_s, completion.finish_reason, completion.endpoint, index > 0)
            return ocr.DescribedPage(number, text, width, height, dpi), call
        raise AssertionError("the chain is never empty")

    # -- loaders.ImageReader ----------------------------------------------------------------
    def read_picture(self, image: Any, number: int) -> tuple[loaders.Page, loaders.ReadCall]:
        return self.describe(image, number)

    def read_image(self, data: bytes) -> list[tuple[loaders.Page, loaders.ReadCall]]:
        if self.blind:  # before decoding: the reason is the same for every image
            raise ocr.Unreadable(self.blind)
        return [self.describe(frame, number) for number, frame in enumerate(ocr.frames(data), 1)]

    def read_pdf_pages(self, data: bytes,
                       numbers: list[int]) -> dict[int, tuple[loaders.Page, loaders.ReadCall]]:
        pages: dict[int, tuple[loaders.Page, loaders.ReadCall]] = {}
        for number in numbers:
            image, dpi = ocr.render_pdf_page(data, number)
            try:
                pages[number] = self.describe(image, number, dpi)
            finally:
                image.close()
        return pages

    def close(self) -> None:
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                provider.close()
        self._providers.clear()


def vision_chain(session: Session, profile: str | None = None) -> list[ProviderSettings] | None:
    """The settings of the vision profile of `profile` (default: the active one), then of its
    fallback if that takes images; None when it names no vision profile."""
    owner = storage.get_profile(session, profile)
    name = owner.vision_profile
    if not name:
        return None
    try:
        chain = [views.provider_settings(storage.get_profile(session, name))]
    except NotFoundError:
        raise UsageError(f"profile {owner.name} names vision profile {name!r}, which does not "
                         f"exist; fix it with `kg admin extraction set --profile {owner.name} "
                         "--vision-profile NAME` (or '' for offline OCR)") from None
    spare = chain[0].fallback_profile
    if spare:
        with contextlib.suppress(NotFoundError):
            settings = views.provider_settings(storage.get_profile(session, spare))
            if registry.spec(settings.provider).images:
                chain.append(settings)
    return chain


def _cannot_send(settings: ProviderSettings) -> str | None:
    if registry.spec(settings.provider).images:
        return None
    able = ", ".join(s.name for s in registry.specs() if s.images) or "none"
    return (f"vision profile {settings.profile_name} uses provider {settings.provider}, which "
            f"cannot send images; give it one that can ({able})")


@dataclass(frozen=True)
class Choice:
    """Which reader a profile (as it is now) gives images: its vision chain (None: offline
    OCR), whether pictures on text pages are read, and the revisions that chose it."""

    chain: list[ProviderSettings] | None
    page_images: bool
    key: tuple[object, ...]

    def describe_reader(self) -> str:
        """'ocr (Tesseract, offline)' or 'describe (vision profile eyes: ollama qwen2.5vl)'."""
        if self.chain is None:
            return "ocr (Tesseract, offline)"
        first = self.chain[0]
        return f"describe (vision profile {first.profile_name}: {first.provider} {first.model})"


def choose(session: Session, profile: str | None = None) -> Choice:
    """The reader choice of `profile` (None: the active one), as a run would make it now."""
    owner = storage.get_profile(session, profile)
    chain = vision_chain(session, owner.name)
    key = (owner.id, owner.revision,
           *((s.profile_name, s.revision) for s in chain or ()))
    return Choice(chain, owner.page_images == PageImages.READ, key)


def needs_reader(files: list[Path] | None) -> bool:
    """Files that cannot hold an image (text, Markdown, HTML) need no reader at all."""
    return files is None or any(loaders.KINDS.get(p.suffix.lower()) in ("image", "pdf")
                                for p in files)


class RunReader:
    """The reader of images for a run, a dry run, a routing preview or an evaluation: chosen
    from the run's profile (`profile`; None: the active one) and chosen again before each
    file (`refresh`), so a `kg admin extraction set` of vision_profile, page_images or of the
    vision profile's own settings applies from the next document read, as other settings apply
    from the next chunk. `dry`: the vision model is never asked (DryDescriber)."""

    def __init__(self, sessions: Callable[[], AbstractContextManager[Session]],
                 profile: str | None = None, models_dir: Path | None = None,
                 dry: bool = False) -> None:
        self.sessions = sessions  # Database.session, or one caller's session (preview)
        self.profile = profile
        self.models_dir = models_dir
        self.dry = dry
        self.choice: Choice | None = None
        self.current: Describer | DryDescriber | loaders.OcrReader = loaders.OcrReader()

    def refresh(self) -> Choice | None:
        """The choice as the profile is now; the reader is rebuilt when it changed. None when
        the profile does not exist (the run's own error says so)."""
        try:
            with self.sessions() as session:
                choice = choose(session, self.profile)
        except NotFoundError:
            return None
        if self.choice is not None and choice.key == self.choice.key:
            return choice
        if self.choice is not None:
            log.info("the reader of images is now %s", choice.describe_reader())
        self._close_current()
        chain = choice.chain
        if chain is None:
            self.current = loaders.OcrReader(choice.page_images)
        elif self.dry:
            with self.sessions() as session:
                self.current = DryDescriber(session, chain, choice.page_images)
        else:
            self.current = Describer(chain, self.models_dir, _cannot_send(chain[0]),
                                     choice.page_images)
        self.choice = choice
        return choice

    @property
    def what(self) -> str:
        return self.current.what

    @property
    def page_images(self) -> bool:
        return self.current.page_images

    def read_image(self, data: bytes) -> list[tuple[loaders.Page, loaders.ReadCall]]:
        return self.current.read_image(data)

    def read_pdf_pages(self, data: bytes,
                       numbers: list[int]) -> dict[int, tuple[loaders.Page, loaders.ReadCall]]:
        return self.current.read_pdf_pages(data, numbers)

    def read_picture(self, image: Any, number: int) -> tuple[loaders.Page, loaders.ReadCall]:
        return self.current.read_picture(image, number)

    def load(self, path: Path) -> loaders.LoadedDocument | loaders.Skipped:
        """One file read as a run would read it now (the choice refreshed first)."""
        self.refresh()
        return loaders.load(path, self)

    def _close_current(self) -> None:
        if isinstance(self.current, Describer):
            self.current.close()

    def close(self) -> None:
        self._close_current()


@contextlib.contextmanager
def reader_for(db: Database, files: list[Path] | None = None, models_dir: Path | None = None,
               profile: str | None = None, dry: bool = False) -> Iterator[RunReader]:
    """The RunReader of `profile` (None: the active one), closed after."""
    reader = RunReader(db.session, profile, models_dir, dry)
    if needs_reader(files):
        reader.refresh()
    try:
        yield reader
    finally:
        reader.close()


# A description's length when the vision model has described nothing yet (tokens): a slide's
# text and a few sentences about it (kg.extraction.vision.PROMPT asks for both).
DEFAULT_DESCRIPTION_TOKENS = 300
DRY_HISTORY = 200  # the vision model's most recent describe calls calibrate a dry run


class DryDescriber:
    """What a dry run puts in place of the vision model: each image or page that would be
    described becomes a placeholder text as long as the model's past descriptions (average of
    its recent describe calls; DEFAULT_DESCRIPTION_TOKENS without any) and a ReadCall with
    those tokens, so chunks, calls and cost are estimated from there. Nothing is sent."""

    what = "the vision model"

    def __init__(self, session: Session, chain: list[ProviderSettings],
                 page_images: bool = False) -> None:
        self.settings = chain[0]
        self.page_images = page_images
        self.blind = _cannot_send(self.settings)
        rows = session.execute(
            select(Call.prompt_tokens, Call.completion_tokens, Call.latency_ms)
            .where(Call.kind == "describe", Call.model == self.settings.model,
                   Call.status == "ok")
            .order_by(Call.id.desc()).limit(DRY_HISTORY)).all()
        self.history = len(rows)
        self.prompt_tokens = (round(sum(r.prompt_tokens for r in rows) / len(rows))
                              if rows else 0)
        self.completion_tokens = (round(sum(r.completion_tokens for r in rows) / len(rows))
                                  if rows else DEFAULT_DESCRIPTION_TOKENS)
        self.seconds = sum(r.latency_ms for r in rows) / len(rows) / 1000 if rows else 0.0

    @property
    def source(self) -> str:
        if self.history:
            return f"average of {self.history} earlier describe calls of {self.settings.model}"
        return (f"assumed {DEFAULT_DESCRIPTION_TOKENS} tokens per description: no earlier "
                f"describe calls of {self.settings.model}")

    def _placeholder(self, number: int, width: int, height: int,
                     dpi: int | None = None) -> tuple[loaders.Page, loaders.ReadCall]:
        if self.blind:
            raise ocr.Unreadable(self.blind)
        text = " ".join(["word"] * self.completion_tokens)  # one estimated token per word
        call = loaders.ReadCall("describe", number, self.settings.provider, self.settings.model,
                                self.seconds, self.settings.profile_name,
                                self.settings.revision, self.prompt_tokens,
                                self.completion_tokens)
        return ocr.DescribedPage(number, text, width, height, dpi), call

    def read_picture(self, image: Any, number: int) -> tuple[loaders.Page, loaders.ReadCall]:
        return self._placeholder(number, *image.size)

    def read_image(self, data: bytes) -> list[tuple[loaders.Page, loaders.ReadCall]]:
        if self.blind:
            raise ocr.Unreadable(self.blind)
        return [self._placeholder(number, *frame.size)
                for number, frame in enumerate(ocr.frames(data), 1)]

    def read_pdf_pages(self, data: bytes,
                       numbers: list[int]) -> dict[int, tuple[loaders.Page, loaders.ReadCall]]:
        return {n: self._placeholder(n, 0, 0) for n in numbers}


def record_reads(db: Database, run_id: int, doc: loaders.LoadedDocument) -> None:
    """The calls rows of a document's reads (kind 'ocr' or 'describe'), in one transaction.
    OCR rows carry the run's profile name: no profile served them."""
    if not doc.reads:
        return
    with db.transaction() as conn:
        profile = conn.execute(select(RUNS.c.profile_name)
                               .where(RUNS.c.id == run_id)).scalar_one()
        collection = scope_of(conn)
        conn.execute(insert(CALLS), [{
            "collection_id": collection, "run_id": run_id, "chunk_id": None, "attempt": 1,
            "kind": r.kind, "provider": r.provider, "model": r.model,
            "profile_name": r.profile_name or profile, "profile_revision": r.profile_revision,
            "status": "ok", "finish_reason": r.finish_reason,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "thinking_tokens": r.thinking_tokens, "latency_ms": r.seconds * 1000,
            "load_ms": None if r.load_s is None else r.load_s * 1000,
            "prompt_eval_ms": None if r.prompt_eval_s is None else r.prompt_eval_s * 1000,
            "eval_ms": None if r.eval_s is None else r.eval_s * 1000,
            "endpoint": r.endpoint, "fallback": r.fallback,
        } for r in doc.reads])


def checks(session: Session, profile: str | None,
           models_dir: Path | None = None) -> list[CheckResult]:
    """`kg admin extraction test`: can the profile's vision model see? One line (none when it
    has no vision profile)."""
    chain = vision_chain(session, profile)
    if chain is None:
        return []
    settings = chain[0]
    problem = _cannot_send(settings)
    if problem:
        return [CheckResult("vision", CheckStatus.FAIL, problem)]
    provider: Any = build_provider(settings, models_dir)
    try:
        result: CheckResult = provider.vision_check()
        return [CheckResult("vision", result.status,
                            f"vision profile {settings.profile_name}: {result.detail}")]
    except ProviderError as exc:
        return [CheckResult("vision", CheckStatus.FAIL,
                            f"vision profile {settings.profile_name}: {exc.message}")]
    finally:
        provider.close()
