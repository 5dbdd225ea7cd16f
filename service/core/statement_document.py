"""The budget statement as a document: sections of paragraphs, notes and tables.

Both renderers (``statement_render.py``: HTML and PDF) draw this one document, so the two
formats always say the same. Words come from ``statement_words.py``; the facts from
``statement.py``. Tables name jobs and releases by short labels (J1, R1) and list the full
ids in an appendix, so no cell has to hold a 32-character id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.core.statement import MechanismGroup, ReleaseFact, Statement
from service.core.statement_words import (
    count_text,
    delta_text,
    eps_text,
    factor,
    one_in,
    when_text,
)


@dataclass(frozen=True)
class Paragraph:
    """Running text; ``lead`` is set in bold before it."""

    text: str
    lead: str = ""


@dataclass(frozen=True)
class Note:
    """Small print under a table."""

    text: str


@dataclass(frozen=True)
class Column:
    """A table column: ``width`` is relative (the renderers scale it to the page)."""

    title: str
    width: float
    align: Literal["left", "right"] = "left"
    mono: bool = False


@dataclass(frozen=True)
class Table:
    """Rows of text under column headings; ``empty`` is said instead of an empty table."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "None."
    total: tuple[str, ...] | None = None  # a last row set in bold

    @property
    def total_cells(self) -> tuple[tuple[str, int], ...]:
        """The total row as (text, columns spanned): a cell takes the empty cells after it."""
        cells: list[list] = []
        for text in self.total or ():
            if text or not cells:
                cells.append([text, 1])
            else:
                cells[-1][1] += 1
        return tuple((text, span) for text, span in cells)


Block = Paragraph | Note | Table


@dataclass(frozen=True)
class Section:
    """A numbered part of the statement."""

    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    """The whole statement: a title, facts about it, sections."""

    title: str
    facts: tuple[tuple[str, str], ...]
    sections: tuple[Section, ...]
    footer: str
    meta: dict[str, str] = field(default_factory=dict)


def document(s: Statement) -> Document:
    """The statement ``s`` as a document."""
    return Document(
        title=f"Privacy budget statement: {s.dataset_name}",
        facts=(
            ("Dataset", s.dataset_name),
            ("Identifier", s.dataset_id),
            ("Organisation", s.tenant_name),
            ("Uploaded", when_text(s.dataset_created_at)),
            (
                "Raw data",
                f"erased on {when_text(s.raw_erased_at)}" if s.raw_erased_at else "kept, encrypted at rest",
            ),
            ("Generated", f"{when_text(s.generated_at, seconds=True)} for {s.generated_by}"),
            (
                "Audit log position",
                f"event #{s.head.seq}, hash {s.head.hash[:16]}… (section 5)" if s.head else "not recorded",
            ),
        ),
        sections=(
            Section("1. Summary", (_figures(s), *_summary(s))),
            Section("2. Releases", _releases(s)),
            Section("3. Jobs and charges (the ledger)", _ledger(s)),
            Section("4. Who did what, when", _timeline(s)),
            Section("5. Tying this statement to the audit log", _chain(s)),
            Section("Appendix A. Identifiers", _identifiers(s)),
            Section("Appendix B. People and processes", _actors(s)),
            Section("Appendix C. The privacy mechanisms of each job", _mechanisms(s)),
        ),
        footer=f"Budget statement · {s.dataset_name} · generated {when_text(s.generated_at)}",
        meta={"dataset_id": s.dataset_id, "generated_at": s.generated_at.isoformat()},
    )


def _figures(s: Statement) -> Table:
    b = s.budget
    return Table(
        columns=(Column("", 70), Column("epsilon (ε)", 40, "right"), Column("delta (δ)", 40, "right")),
        rows=(
            ("Total budget set by the custodian", eps_text(b.epsilon_total), delta_text(b.delta_total)),
            ("Charged to finished jobs", eps_text(b.epsilon_charged), delta_text(b.delta_charged)),
            ("Reserved by jobs in progress", eps_text(b.epsilon_reserved), delta_text(b.delta_reserved)),
        ),
        total=("Remaining", eps_text(b.epsilon_remaining), delta_text(b.delta_remaining)),
    )


_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _plural(n: int, one: str, many: str | None = None, *, start: bool = False) -> str:
    """``n`` things in words (up to ten), e.g. ``two jobs``; ``start`` capitalizes it."""
    text = f"{_WORDS[n] if n < len(_WORDS) else n} {one if n == 1 else many or one + 's'}"
    return text[0].upper() + text[1:] if start else text


def _summary(s: Statement) -> tuple[Block, ...]:
    b = s.budget
    out: list[Block] = [
        Paragraph(
            f"This statement accounts for the privacy budget of the dataset “{s.dataset_name}”, held by "
            f"the organisation “{s.tenant_name}”. It lists every synthetic table released from the "
            "dataset and what it cost, the jobs that used budget without a release, what remains, and "
            "who did what and when, as recorded in the service's tamper-evident audit log. It reflects "
            f"the records at {when_text(s.generated_at, seconds=True)}.",
            "What this is.",
        ),
        Paragraph(
            "Every release is protected by differential privacy. Its strength is described by two "
            "numbers, epsilon (ε) and delta (δ). The guarantee compares the dataset as it is with the same "
            "dataset with any one row added or removed (the “add or remove one row” neighbouring "
            "relation): whether or not a person's row is included changes the probability of any "
            "result by at most a factor of e to the power ε, except with a probability of at most δ. "
            "Smaller numbers mean stronger protection.",
            "The protection.",
        ),
    ]
    if b.epsilon_total is None or b.delta_total is None:
        out.append(
            Paragraph("No total budget has been set, so no job can run on this dataset.", "The budget.")
        )
    else:
        out.append(
            Paragraph(
                f"The custodian set a total budget of ε = {eps_text(b.epsilon_total)} and "
                f"δ = {delta_text(b.delta_total)} ({one_in(b.delta_total)}) for everything released "
                "from this dataset. The service refuses any job that would go beyond it.",
                "The budget.",
            )
        )
    charged, unreleased, live = s.charged_jobs, s.unreleased, s.live
    first = [r for r in s.releases if not r.repeat]
    spent = (
        "Privacy losses of separate releases add up (sequential composition), so every training job "
        "is charged to the budget. "
    )
    if not charged:
        spent += "So far no job has been charged anything."
    else:
        spent += (
            f"So far {_plural(len(charged), 'job has', 'jobs have')} been charged a total of "
            f"ε = {eps_text(b.epsilon_charged)} and δ = {delta_text(b.delta_charged)}. "
        )
        made = _plural(len(s.releases), "release")
        spent += f"{_plural(len(first), 'job', start=True)} produced the {made} of section 2"
        charged_unreleased = [j for j in unreleased if j in charged]
        if charged_unreleased:
            names = ", ".join(j.label for j in charged_unreleased)
            spent += (
                f"; {names} ended without a release and {'is' if len(charged_unreleased) == 1 else 'are'} "
                "charged for what may have been spent (section 3 says why)"
            )
        spent += "."
    spent += " Drawing more tables from an already trained model is post-processing and costs nothing."
    out.append(Paragraph(spent, "What was spent."))
    if live:
        out.append(
            Paragraph(
                f"{_plural(len(live), 'job is', 'jobs are', start=True)} still queued or running and "
                f"{'holds' if len(live) == 1 else 'hold'} ε = {eps_text(b.epsilon_reserved)} and "
                f"δ = {delta_text(b.delta_reserved)} in reserve; each will be charged at most its "
                "reservation when it ends.",
                "In progress.",
            )
        )
    if b.epsilon_total is not None and b.delta_total is not None:
        out.append(
            Paragraph(
                f"ε = {eps_text(b.epsilon_remaining)} and δ = {delta_text(b.delta_remaining)} remain for "
                "new jobs.",
                "What remains.",
            )
        )
    out.append(Paragraph(_meaning(s), "What this means."))
    if s.raw_erased_at is not None:
        out.append(
            Paragraph(
                f"The raw data was erased on {when_text(s.raw_erased_at)}: its encryption key and file were "
                "destroyed. The releases, their certificates and this ledger remain.",
                "Raw data.",
            )
        )
    out.append(
        Note(
            f"Sums are exact; the ledger compares them with the budget allowing {s.slack:g} in ε, far "
            "below any ε that matters. Times are UTC. Jobs are named J1, J2, … and releases R1, R2, … in "
            "the order they were made; appendix A gives their full identifiers."
        )
    )
    return tuple(out)


def _meaning(s: Statement) -> str:
    b = s.budget
    if not s.charged_jobs:
        text = "Nothing has been spent, so nothing computed from this dataset's rows has been released."
    else:
        text = (
            f"Taken together, everything released from this dataset so far is differentially private "
            f"with ε = {eps_text(b.epsilon_charged)} and δ = {delta_text(b.delta_charged)}: adding or "
            "removing any one person's row changes the probability of any combination of the released "
            f"tables by at most a factor of {factor(b.epsilon_charged)}, except with a probability of at "
            f"most {delta_text(b.delta_charged)}."
        )
    return text + (
        " Delta (δ) is the small chance that this limit fails. The service keeps each job's δ well below one "
        "divided by the number of rows, so that even a failure of the worst kind would be expected to "
        "expose far less than one person's row."
    )


def mechanisms_text(groups: tuple[MechanismGroup, ...]) -> str:
    """A certificate's mechanisms in one line: each kind and its share of ε."""
    if not groups:
        return "not recorded"
    return "; ".join(f"{g.name} {g.share:.0%}" for g in groups)


def _lower_bound(r: ReleaseFact) -> str:
    a = r.empirical_audit
    if a is None:
        return "not audited"
    return f"≥ {eps_text(a.epsilon_lower_bound)} ({a.confidence:.0%} conf.)"


def _releases(s: Statement) -> tuple[Block, ...]:
    rows = tuple(
        (
            when_text(r.created_at),
            r.label + (" *" if r.repeat else ""),
            r.job_label,
            count_text(r.rows) + ("" if r.state == "ready" else f" ({r.state})"),
            eps_text(r.epsilon),
            delta_text(r.delta),
            mechanisms_text(r.mechanisms),
            r.accountant.split(" (")[0],
            _lower_bound(r),
        )
        for r in s.releases
    )
    blocks: list[Block] = [
        Table(
            columns=(
                Column("Date (UTC)", 19),
                Column("Release", 15),
                Column("Job", 8),
                Column("Rows", 18, "right"),
                Column("ε", 13, "right"),
                Column("δ", 16, "right"),
                Column("Mechanisms (share of ε)", 40),
                Column("Accountant", 21),
                Column("Attack lower bound", 30),
            ),
            rows=rows,
            empty="No table has been released from this dataset.",
        )
    ]
    if not s.releases:
        return tuple(blocks)
    relations = sorted({r.neighbouring_relation for r in s.releases})
    accountants = sorted({r.accountant for r in s.releases})
    blocks.append(
        Note(
            "ε and δ are each release's guarantee as its certificate states it, for the neighbouring "
            f"relation “{'”, “'.join(relations)}”, computed by the {' and the '.join(accountants)} "
            "accountant. * A table drawn later from an already trained model: sampling is "
            "post-processing, so it has the same guarantee as the job's first release and is charged "
            "once, with the job. Appendix C details each job's mechanisms."
        )
    )
    blocks.append(
        Note(
            "Attack lower bound: an empirical audit re-runs the release's privacy mechanisms, with its "
            "settings, on public rows with planted test records (“canaries”), never on this dataset and "
            "without spending its budget, and counts how often an attack can tell which canaries were "
            "used. That gives a lower bound on ε, at the confidence shown: the privacy loss one attack "
            "actually demonstrated. A bound "
            "at or below the claimed ε is consistent with the claim; one above it would prove the claim "
            "wrong. It never proves the claim right. “Not audited” means no such audit was run."
        )
    )
    for r in s.releases:
        a = r.empirical_audit
        if a is not None and not r.repeat:  # a later table shares its job's certificate and audit
            blocks.append(
                Note(
                    f"{r.label}: claimed ε = {eps_text(r.epsilon)}; attack lower bound "
                    f"ε ≥ {eps_text(a.epsilon_lower_bound)} at {a.confidence:.0%} confidence "
                    f"({a.method}; {a.canaries:,} canaries, {a.correct:,} of {a.guesses:,} guesses "
                    f"correct{', ' + a.base if a.base else ''})."
                    + (
                        f" With every guess right it would have shown ε ≥ {eps_text(a.ceiling)}, "
                        "so it could have caught a claim up to that."
                        if a.ceiling is not None
                        else ""
                    )
                )
            )
    return tuple(blocks)


def _ledger(s: Statement) -> tuple[Block, ...]:
    b = s.budget
    unreleased = Table(
        columns=(
            Column("Job", 9),
            Column("Ended (UTC)", 22),
            Column("State", 16),
            Column("ε charged", 19, "right"),
            Column("δ charged", 19, "right"),
            Column("Why it is charged this much", 95),
        ),
        rows=tuple(
            (
                j.label,
                when_text(j.finished_at),
                j.state,
                eps_text(j.epsilon_charged),
                delta_text(j.delta_charged),
                j.why,
            )
            for j in s.unreleased
        ),
        empty="Every job that ended produced a release.",
    )
    ledger = Table(
        columns=(
            Column("Job", 9),
            Column("Submitted (UTC)", 22),
            Column("Ended (UTC)", 22),
            Column("State", 17),
            Column("Releases", 24),
            Column("ε reserved", 16, "right"),
            Column("ε charged", 16, "right"),
            Column("δ charged", 18, "right"),
        ),
        rows=tuple(
            (
                j.label,
                when_text(j.created_at),
                when_text(j.finished_at),
                j.state,
                ", ".join(j.release_labels) or "none",
                eps_text(j.epsilon_reserved),
                eps_text(j.epsilon_charged) if j.final else "(reserved)",
                delta_text(j.delta_charged) if j.final else "(reserved)",
            )
            for j in s.jobs
        ),
        empty="No job has been submitted on this dataset.",
        total=("Total charged", "", "", "", "", "", eps_text(b.epsilon_charged), delta_text(b.delta_charged))
        if s.jobs
        else None,
    )
    return (
        Paragraph(
            "A job that ended without a release is still charged what it may have spent: privacy is "
            "spent when a mechanism reads the data, not when a table is published.",
            "Jobs that ended without a release.",
        ),
        unreleased,
        Paragraph(
            "Every job reserves its ε and δ when it is submitted and is charged once, when it ends; the "
            "charges add up to the total spent.",
            "Every job.",
        ),
        ledger,
    )


def _timeline(s: Statement) -> tuple[Block, ...]:
    blocks: list[Block] = [
        Paragraph(
            "Every event of the audit log about this dataset, its jobs and its releases, oldest first.",
        )
    ]
    if s.events_left_out:
        blocks.append(
            Note(
                f"The {s.events_left_out:,} oldest events are left out here for length; the audit log "
                "export holds them all."
            )
        )
    blocks.append(
        Table(
            columns=(
                Column("Time (UTC)", 30),
                Column("Who", 46),
                Column("What", 88),
                Column("Event #", 16, "right"),
            ),
            rows=tuple((when_text(e.at, seconds=True)[:-4], e.actor, e.what, str(e.seq)) for e in s.timeline),
            empty="No events.",
        )
    )
    return tuple(blocks)


def _chain(s: Statement) -> tuple[Block, ...]:
    if s.head is None:
        return (Paragraph("The audit log's position was not recorded for this statement."),)
    h = s.head
    return (
        Paragraph(
            "The audit log is a hash chain: each event's hash covers the event and the hash before it, "
            "so changing, removing or reordering any earlier event changes every later hash. Generating "
            "this statement was itself recorded as the event below, and the statement shows the records "
            "as of that event. Anyone holding an export of the audit log (or an evidence bundle) can "
            "check that it contains this event with these hashes, and the command “dpsynth audit verify” "
            "checks the chain itself."
        ),
        Table(
            columns=(Column("", 50), Column("", 130, mono=True)),
            rows=(
                ("Event number (whole log)", str(h.seq)),
                ("Event hash (whole log)", h.hash),
                ("Event number (this organisation)", str(h.tenant_seq)),
                ("Event hash (this organisation)", h.tenant_hash),
            ),
        ),
    )


def _identifiers(s: Statement) -> tuple[Block, ...]:
    rows = [("D", "dataset", s.dataset_id)]
    rows += [(j.label, "job", j.job_id) for j in s.jobs]
    rows += [(r.label, "release", r.release_id) for r in s.releases]
    return (
        Table(
            columns=(Column("Label", 20), Column("Kind", 30), Column("Full identifier", 130, mono=True)),
            rows=tuple(rows),
        ),
    )


def _actors(s: Statement) -> tuple[Block, ...]:
    return (
        Paragraph("How the audit log names each person, API key and service process in section 4."),
        Table(
            columns=(Column("Name", 80), Column("In the audit log", 100, mono=True)),
            rows=tuple(s.actors),
            empty="Nobody.",
        ),
    )


def _mechanisms(s: Statement) -> tuple[Block, ...]:
    rows = []
    for r in s.releases:
        if r.repeat:
            continue
        for g in r.mechanisms:
            sigma = "—" if g.noise_min is None else f"{g.noise_min:.3g}"
            if g.noise_max is not None and g.noise_max != g.noise_min:
                sigma += f"–{g.noise_max:.3g}"
            rows.append(
                (
                    r.job_label,
                    g.name,
                    ", ".join(g.kinds),
                    str(g.count),
                    sigma,
                    f"{g.steps:,}",
                    f"{g.share:.1%}",
                )
            )
    return (
        Paragraph(
            "Every mechanism that read the raw data adds calibrated random noise. Mechanisms of one kind "
            "are grouped: σ is the noise multiplier (the noise relative to what one row can change; "
            "larger means more noise), steps how often they ran, and share each group's stand-alone ε as "
            "a fraction of their sum (the accountant composes them into a total below that sum)."
        ),
        Table(
            columns=(
                Column("Job", 12),
                Column("Mechanisms", 48),
                Column("Kind", 40),
                Column("Count", 16, "right"),
                Column("Noise σ", 24, "right"),
                Column("Steps", 18, "right"),
                Column("Share of ε", 22, "right"),
            ),
            rows=tuple(rows),
            empty="No certificate lists mechanisms.",
        ),
    )
