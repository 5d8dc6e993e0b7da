"""SQLAlchemy 2 typed models. The migrations in migrations/versions create exactly these tables."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from kg.profiles.settings import (
    FALLBACK_KINDS,
    DescriptionMode,
    GroundingMode,
    OutputShape,
    PageImages,
    ThinkingMode,
)

# The profile CHECKs' choice lists are the settings' enums (kg.profiles.settings), in their
# order, so the database cannot drift from the validation. Provider names are checked by
# kg.providers.registry (plug-ins may add some), not by a CHECK.
THINKING_MODES = tuple(m.value for m in ThinkingMode)
# fallback_on is stored as a comma-separated subset of FALLBACK_KINDS, in their order.
FALLBACK_ON = tuple(",".join(c) for n in range(1, len(FALLBACK_KINDS) + 1)
                    for c in itertools.combinations(FALLBACK_KINDS, n))
DESCRIPTIONS = tuple(m.value for m in DescriptionMode)
GROUNDING = tuple(m.value for m in GroundingMode)
SHAPES = tuple(m.value for m in OutputShape)
PAGE_IMAGES = tuple(m.value for m in PageImages)
ONTOLOGY_MODES = ("strict", "open")
# extract: a chunk's extraction; describe: a vision model reading an image; ocr: Tesseract
# reading one (seconds, no tokens); ask: an answer from the graph; resolve: a same-entity
# judgement.
CALL_KINDS = ("extract", "describe", "ocr", "ask", "resolve")


def utcnow() -> datetime:
    return datetime.now(UTC)


DEFAULT_COLLECTION_ID = 1  # the `default` collection: made by migration 0015, never deleted
# Where a connection keeps the collection its writes belong to (Connection.info, set by
# kg.db.session for every transaction it begins).
COLLECTION_KEY = "kg_collection_id"


def current_collection(context: Any) -> int:
    """Column default of every `collection_id`: the collection of the connection that writes."""
    return int(context.connection.info.get(COLLECTION_KEY, DEFAULT_COLLECTION_ID))


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class InCollection:
    """A row of one collection's graph. Reads through a kg session see only their collection
    (kg.db.scope adds the filter); on PostgreSQL a row-level security policy also holds it."""

    # No index of its own: on SQLite (no statistics) an index on it would win over the
    # selective ones (source_id, chunk_id, ...) and turn lookups into scans of a whole
    # collection. Where a collection is listed, a unique key starts with it (concepts,
    # documents); deleting a collection, rare, may scan.
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"),
        default=current_collection, server_default=text(str(DEFAULT_COLLECTION_ID)))


class Temporal:
    """A graph row with a validity interval (issue #22): live while `valid_to` is NULL; a row
    written for a document version not yet cut over has `valid_from` NULL (kg.db.scope hides
    both from ORM reads unless a session asks for history or a past date)."""

    # The server default too: rows written outside kg's inserts (COPY, SQL) are live.
    valid_from: Mapped[datetime | None] = mapped_column(
        default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    valid_to: Mapped[datetime | None] = mapped_column(default=None)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class ExtractionProfile(Base):
    """One named set of LLM settings; exactly one row is active at a time."""

    __tablename__ = "extraction_profiles"
    __table_args__ = (
        CheckConstraint(_in("thinking_mode", THINKING_MODES), name="ck_profile_thinking_mode"),
        CheckConstraint("temperature >= 0 AND temperature <= 2", name="ck_profile_temperature"),
        CheckConstraint("top_p > 0 AND top_p <= 1", name="ck_profile_top_p"),
        CheckConstraint("gpu_layers >= -1", name="ck_profile_gpu_layers"),
        CheckConstraint(
            "num_threads IS NULL OR (num_threads >= 1 AND num_threads <= 1024)",
            name="ck_profile_num_threads",
        ),
        CheckConstraint(
            "context_window >= 512 AND context_window <= 2097152", name="ck_profile_context_window"
        ),
        CheckConstraint(
            "max_output_tokens >= 64 AND max_output_tokens < context_window",
            name="ck_profile_max_output_tokens",
        ),
        CheckConstraint("max_parallel >= 1 AND max_parallel <= 64", name="ck_profile_max_parallel"),
        CheckConstraint("max_retries >= 0 AND max_retries <= 10", name="ck_profile_max_retries"),
        CheckConstraint("timeout_s > 0 AND timeout_s <= 86400", name="ck_profile_timeout"),
        CheckConstraint("length(name) >= 1 AND length(name) <= 64", name="ck_profile_name"),
        CheckConstraint("length(model) >= 1", name="ck_profile_model"),
        CheckConstraint("revision >= 1", name="ck_profile_revision"),
        CheckConstraint("length(ontology) >= 1 AND length(ontology) <= 64",
                        name="ck_profile_ontology"),
        CheckConstraint(_in("descriptions", DESCRIPTIONS), name="ck_profile_descriptions"),
        CheckConstraint(_in("grounding", GROUNDING), name="ck_profile_grounding"),
        CheckConstraint(_in("shape", SHAPES), name="ck_profile_shape"),
        CheckConstraint(_in("page_images", PAGE_IMAGES), name="ck_profile_page_images"),
        CheckConstraint("fallback_profile IS NULL OR (length(fallback_profile) >= 1 "
                        "AND length(fallback_profile) <= 64)", name="ck_profile_fallback_profile"),
        CheckConstraint(_in("fallback_on", FALLBACK_ON), name="ck_profile_fallback_on"),
        CheckConstraint("vision_profile IS NULL OR (length(vision_profile) >= 1 "
                        "AND length(vision_profile) <= 64)", name="ck_profile_vision_profile"),
        Index(
            "uq_extraction_profiles_one_active",
            "active",
            unique=True,
            sqlite_where=text("active = 1"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(512))
    base_url: Mapped[str | None] = mapped_column(String(512))
    api_key_env: Mapped[str | None] = mapped_column(String(128))
    temperature: Mapped[float] = mapped_column(Float)
    top_p: Mapped[float] = mapped_column(Float)
    thinking_mode: Mapped[str] = mapped_column(String(8))
    gpu_layers: Mapped[int] = mapped_column(Integer)
    num_threads: Mapped[int | None] = mapped_column(Integer)
    context_window: Mapped[int] = mapped_column(Integer)
    max_output_tokens: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float)
    keep_alive: Mapped[str | None] = mapped_column(String(32))
    fallback_profile: Mapped[str | None] = mapped_column(String(64))
    fallback_on: Mapped[str] = mapped_column(String(64), default="unreachable,timeout,error",
                                             server_default="unreachable,timeout,error")
    # The profile that describes images (issue #25); None: offline OCR.
    vision_profile: Mapped[str | None] = mapped_column(String(64))
    # Pictures on PDF pages that have text: off, or read and appended (issue #25).
    page_images: Mapped[str] = mapped_column(String(8), default="off", server_default="off")
    ontology: Mapped[str] = mapped_column(String(64), default="default")
    descriptions: Mapped[str] = mapped_column(String(8), default="generate")
    grounding: Mapped[str] = mapped_column(String(8), default="on")
    shape: Mapped[str] = mapped_column(String(8), default="graph", server_default="graph")
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class ProfileChange(Base):
    """Audit trail: one row per changed field of a profile."""

    __tablename__ = "profile_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_name: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RelationshipType(Base):
    """The relationship vocabulary offered to the model."""

    __tablename__ = "relationship_types"
    __table_args__ = (
        CheckConstraint("direction IN ('directed', 'symmetric')", name="ck_reltype_direction"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    category: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(200), default="")
    curated: Mapped[bool] = mapped_column(Boolean, default=True)


class RelationshipTypeProposal(Base):
    """A relationship type a model used that is not in the vocabulary: kept for review."""

    __tablename__ = "relationship_type_proposals"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    occurrences: Mapped[int] = mapped_column(Integer, default=0)
    example: Mapped[str] = mapped_column(String(300), default="")
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Ontology(Base):
    """A named set of concept and relation types; `revision` grows with every change."""

    __tablename__ = "ontologies"
    __table_args__ = (
        CheckConstraint(_in("mode", ONTOLOGY_MODES), name="ck_ontology_mode"),
        CheckConstraint("revision >= 1", name="ck_ontology_revision"),
        CheckConstraint("length(name) >= 1", name="ck_ontology_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    mode: Mapped[str] = mapped_column(String(8), default="strict")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OntologyConceptType(Base):
    __tablename__ = "ontology_concept_types"
    __table_args__ = (UniqueConstraint("ontology_id", "name", name="uq_ontology_concept_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ontology_id: Mapped[int] = mapped_column(
        ForeignKey("ontologies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(300), default="")


class OntologyRelationType(Base):
    """A relation type of one ontology; `type_id` is its name in the graph's type registry."""

    __tablename__ = "ontology_relation_types"
    __table_args__ = (
        UniqueConstraint("ontology_id", "name", name="uq_ontology_relation_type"),
        CheckConstraint("direction IN ('directed', 'symmetric')",
                        name="ck_ontology_relation_direction"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ontology_id: Mapped[int] = mapped_column(
        ForeignKey("ontologies.id", ondelete="CASCADE"), index=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("relationship_types.id"))
    name: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32), default="general")
    description: Mapped[str] = mapped_column(String(300), default="")
    direction: Mapped[str] = mapped_column(String(16), default="directed")
    domain: Mapped[str | None] = mapped_column(String(64))
    range: Mapped[str | None] = mapped_column(String(64))
    example: Mapped[str | None] = mapped_column(String(300))


class Collection(Base):
    """One separate graph in the database; `default` (id 1) holds what has no other home."""

    __tablename__ = "collections"
    __table_args__ = (
        CheckConstraint("length(name) >= 1 AND length(name) <= 64", name="ck_collection_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    # Pinned for this collection's runs; NULL: the active profile / the profile's ontology.
    profile: Mapped[str | None] = mapped_column(String(64))
    ontology: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")


class Document(InCollection, Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "path", "sha256", name="uq_document_path_sha"),
        CheckConstraint(
            "status IN ('pending', 'ingested', 'partial', 'failed')", name="ck_document_status"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # OCR text only: pages and word boxes of the transcription (kg.sourcemap), else NULL.
    source_map: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Versions (issue #22): one row per content of a path; the live one has valid_to NULL, a
    # new one waiting for its cutover has valid_from NULL.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    valid_from: Mapped[datetime | None] = mapped_column(
        default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    valid_to: Mapped[datetime | None] = mapped_column(default=None, index=True)

    chunks: Mapped[list[Chunk]] = relationship(back_populates="document")


class Chunk(InCollection, Base):
    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("document_id", "ordinal", name="uq_chunk_ordinal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    token_estimate: Mapped[int] = mapped_column(Integer)

    document: Mapped[Document] = relationship(back_populates="chunks")


class Concept(InCollection, Temporal, Base):
    __tablename__ = "concepts"
    __table_args__ = (
        UniqueConstraint("collection_id", "norm_label", name="uq_concept_norm_label"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    norm_label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    search_terms: Mapped[list[str]] = mapped_column(JSON, default=list)
    type: Mapped[str | None] = mapped_column(String(64))  # None: made before ontologies
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    aliases: Mapped[list[ConceptAlias]] = relationship(back_populates="concept")


class ConceptAlias(InCollection, Base):
    """A surface form seen in text that resolved to a concept."""

    __tablename__ = "concept_aliases"
    __table_args__ = (UniqueConstraint("concept_id", "alias", name="uq_concept_alias"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    concept_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[str] = mapped_column(String(200))
    norm_alias: Mapped[str] = mapped_column(String(200), index=True)

    concept: Mapped[Concept] = relationship(back_populates="aliases")


class Relationship(InCollection, Temporal, Base):
    """One typed edge; every sighting of it is an evidence row."""

    __tablename__ = "relationships"
    __table_args__ = (
        UniqueConstraint("source_id", "type_id", "target_id", name="uq_relationship_edge"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_relationship_confidence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    type_id: Mapped[int] = mapped_column(ForeignKey("relationship_types.id"))
    target_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    confidence: Mapped[float] = mapped_column(Float)


class Evidence(InCollection, Temporal, Base):
    """A verbatim quote from a chunk supporting a concept or a relationship."""

    __tablename__ = "evidence"
    __table_args__ = (
        CheckConstraint(
            "(concept_id IS NULL) <> (relationship_id IS NULL)", name="ck_evidence_one_subject"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    concept_id: Mapped[int | None] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    relationship_id: Mapped[int | None] = mapped_column(
        ForeignKey("relationships.id", ondelete="CASCADE"), index=True
    )
    quote: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)


# The literal kinds an attribute's value is (kg.extraction.vocabulary maps XSD names to them).
ATTRIBUTE_DATATYPES = ("string", "number", "date", "year")


class ConceptAttribute(InCollection, Temporal, Base):
    """A literal value of a concept (issue #20): `numberOfStudents` = "5,000" (normalised
    `5000`), from a relation of the ontology whose range is a datatype; every sighting of it
    is an `attribute_evidence` row. Live while some of its evidence is (document versions)."""

    __tablename__ = "concept_attributes"
    __table_args__ = (
        # A concept id belongs to one collection: the key needs no collection column.
        UniqueConstraint("concept_id", "name", "normalised", name="uq_concept_attribute"),
        CheckConstraint(_in("datatype", ATTRIBUTE_DATATYPES), name="ck_attribute_datatype"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    concept_id: Mapped[int] = mapped_column(ForeignKey("concepts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))  # the relation as the ontology spells it
    datatype: Mapped[str] = mapped_column(String(8))
    value: Mapped[str] = mapped_column(Text)  # verbatim, as first seen
    normalised: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttributeEvidence(InCollection, Temporal, Base):
    """Where an attribute was read: the chunk, the quote, and where the value sits in it.
    A table of its own, not a third subject of `evidence`: search, retrieval and ask read
    `evidence` as quotes about a concept or a relationship, and stay as they are."""

    __tablename__ = "attribute_evidence"

    id: Mapped[int] = mapped_column(primary_key=True)
    attribute_id: Mapped[int] = mapped_column(
        ForeignKey("concept_attributes.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    quote: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)  # the quote, in the document's text
    char_end: Mapped[int] = mapped_column(Integer)
    value_start: Mapped[int] = mapped_column(Integer)  # the value itself, in the same text
    value_end: Mapped[int] = mapped_column(Integer)


class Run(InCollection, Base):
    """One ingestion run."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'completed', 'partial', 'failed', 'interrupted')",
            name="ck_run_status",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    profile_name: Mapped[str] = mapped_column(String(64))
    profiles_used: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    documents: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_ok: Mapped[int] = mapped_column(Integer, default=0)
    chunks_failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    ontology: Mapped[str | None] = mapped_column(String(64))
    ontology_revision: Mapped[int | None] = mapped_column(Integer)


class RunDocument(Base):
    """Which documents a run covers, so that a resumed run knows its work."""

    __tablename__ = "run_documents"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )


class ChunkExtraction(InCollection, Base):
    """The outcome of one chunk in one run: committed with its graph rows, or failed."""

    __tablename__ = "chunk_extractions"
    __table_args__ = (
        UniqueConstraint("run_id", "chunk_id", name="uq_chunk_extraction"),
        CheckConstraint("status IN ('ok', 'failed')", name="ck_chunk_extraction_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer)
    profile_revision: Mapped[int] = mapped_column(Integer)
    concepts: Mapped[int] = mapped_column(Integer, default=0)
    relationships: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    ontology: Mapped[str | None] = mapped_column(String(64))
    ontology_revision: Mapped[int | None] = mapped_column(Integer)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The `kg worker` that stored it (host:pid); NULL for a single-process `kg ingest`.
    worker: Mapped[str | None] = mapped_column(String(255))


class Call(InCollection, Base):
    """One LLM request (or one OCR pass): the unit every analytic is computed from."""

    __tablename__ = "calls"
    __table_args__ = (CheckConstraint(_in("kind", CALL_KINDS), name="ck_call_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="SET NULL"))
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(512))
    profile_name: Mapped[str] = mapped_column(String(64))
    profile_revision: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error_kind: Mapped[str | None] = mapped_column(String(32))
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    thinking_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0)
    load_ms: Mapped[float | None] = mapped_column(Float)
    prompt_eval_ms: Mapped[float | None] = mapped_column(Float)
    eval_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ontology: Mapped[str | None] = mapped_column(String(64))
    ontology_revision: Mapped[int | None] = mapped_column(Integer)
    grounding: Mapped[str | None] = mapped_column(String(8))  # on | fallback | off
    endpoint: Mapped[str | None] = mapped_column(String(512))  # where it went (no credentials)
    fallback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    rule_id: Mapped[int | None] = mapped_column(Integer)  # the routing rule that chose it
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the call was for (CALL_KINDS): analytics split by it.
    kind: Mapped[str] = mapped_column(String(16), default="extract", server_default="extract")


class ModelPrice(Base):
    """What a model's tokens cost (per million); a model without a row costs nothing (local)."""

    __tablename__ = "model_prices"
    __table_args__ = (
        CheckConstraint(
            "prompt_per_million >= 0 AND completion_per_million >= 0", name="ck_price_positive"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    prompt_per_million: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    completion_per_million: Mapped[Decimal] = mapped_column(Numeric(14, 6))
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    note: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(InCollection, Base):
    """One scoring of a profile against a folder of gold annotations."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    gold_dir: Mapped[str] = mapped_column(String(1024))
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    documents: Mapped[int] = mapped_column(Integer)
    overall: Mapped[dict[str, Any]] = mapped_column(JSON)
    by_category: Mapped[dict[str, Any]] = mapped_column(JSON)


class EvaluationDocument(Base):
    __tablename__ = "evaluation_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), index=True
    )
    document: Mapped[str] = mapped_column(String(1024))
    category: Mapped[str] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    predicted: Mapped[dict[str, Any]] = mapped_column(JSON)


class EndpointStyle(Base):
    """How an OpenAI-compatible endpoint takes structured output, learnt by a first request."""

    __tablename__ = "endpoint_styles"
    __table_args__ = (
        CheckConstraint("style IN ('json_schema', 'json_object+schema', 'plain')",
                        name="ck_endpoint_style"),
    )

    base_url: Mapped[str] = mapped_column(String(512), primary_key=True)
    model: Mapped[str] = mapped_column(String(512), primary_key=True)
    style: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")  # what the server said to the others
    probed_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingRule(Base):
    """`kg admin routing add`: chunks matching `expr` go to `profile` (lowest priority first)."""

    __tablename__ = "routing_rules"
    __table_args__ = (
        CheckConstraint("priority >= 0 AND priority <= 1000000", name="ck_routing_priority"),
        CheckConstraint("length(expr) >= 1", name="ck_routing_expr"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    expr: Mapped[str] = mapped_column(Text)
    profile: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=100)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")


class CachedReply(Base):
    """A valid reply by the content address of its request (kg.extraction.cache)."""

    __tablename__ = "call_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex
    model: Mapped[str] = mapped_column(String(512))
    content: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CurationDecision(InCollection, Base):
    """One curation decision: who, when, what, and enough of the old rows to undo it."""

    __tablename__ = "curation_decisions"
    __table_args__ = (
        CheckConstraint(
            "action IN ('merge', 'rename', 'delete_concept', 'delete_relationship', "
            "'keep_apart')",
            name="ck_curation_action",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text)
    concept_id: Mapped[int | None] = mapped_column()  # the concept that remains, if any
    norms: Mapped[list[str]] = mapped_column(JSON, default=list)  # labels it decided about
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what undo restores
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    undone_at: Mapped[datetime | None] = mapped_column()
    undone_by: Mapped[str | None] = mapped_column(String(128))


class GraphEpoch(Base):
    """One row, bumped by every change that rewrites or removes graph rows (kg.db.locks)."""

    __tablename__ = "graph_epoch"
    __table_args__ = (CheckConstraint("id = 1", name="ck_graph_epoch_one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiToken(Base):
    """One API token: its name, scope and the hash of its secret (never the secret)."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("scope IN ('read', 'admin')", name="ck_api_token_scope"),
        # A revoked token keeps its row (audit); its name may be given to a new token.
        Index("uq_api_tokens_live_name", "name", unique=True,
              sqlite_where=text("revoked_at IS NULL"),
              postgresql_where=text("revoked_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    # The collection ids it may use; NULL: every collection (tokens made before collections).
    collections: Mapped[list[int] | None] = mapped_column(JSON, default=None)
