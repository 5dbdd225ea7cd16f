"""The budget statement drawn as HTML (Jinja2) and as PDF (fpdf2), from one ``Document``.

The PDF is A4 portrait with the dataset's name, the generation time and "page N of M" on
every page and table headings repeated after a page break. It uses DejaVu Sans when the
system has it (Debian: ``fonts-dejavu-core``), which covers ε, δ, superscripts and any
name a user may give a dataset; without it the PDF falls back to the PDF core fonts
(Helvetica, Courier) and writes what Latin-1 cannot hold in plain letters (ε as
"epsilon") or as "?". Nothing is fetched from the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fpdf import FPDF, FontFace
from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.core.statement_document import Document, Note, Paragraph, Table

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))
_env.tests["paragraph"] = lambda block: isinstance(block, Paragraph)
_env.tests["note"] = lambda block: isinstance(block, Note)
_env.tests["table"] = lambda block: isinstance(block, Table)

# Where Debian (fonts-dejavu-core, in the Docker image), Fedora and Arch put DejaVu.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu-sans-fonts",
    "/usr/share/fonts/TTF",
    "/usr/share/fonts/dejavu",
)
_FONT_FILES = {"sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf"}
_LATIN1 = str.maketrans(
    {
        "ε": "epsilon",
        "δ": "delta",
        "σ": "sigma",
        "≥": ">=",
        "×": "x",
        "—": "-",
        "–": "-",
        "…": "...",
        "“": '"',
        "”": '"',
        "’": "'",
        "⁻": "^-",
        **{c: d for c, d in zip("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789", strict=True)},
    }
)
_SHORT = 100.0  # mm: a section this short is never split across pages
_BODY, _SMALL, _TABLE, _HEADING = 9.5, 7.8, 8.0, 12.0  # font sizes (pt); a heading's height (mm)
_INK, _GREY, _RULE, _HEAD_FILL = (25, 32, 45), (95, 102, 115), (200, 205, 212), (232, 236, 241)


def render_html(doc: Document) -> str:
    """The statement as one self-contained HTML page (inline CSS, no scripts, prints well)."""
    return _env.get_template("statement.html").render(doc=doc)


@dataclass(frozen=True)
class Fonts:
    """The font files of the PDF, or None for the core fonts."""

    sans: Path
    sans_bold: Path
    mono: Path


def find_fonts(dirs: Sequence[str] | None = None) -> Fonts | None:
    """DejaVu Sans, Sans Bold and Sans Mono from the first directory that has all three."""
    for folder in FONT_DIRS if dirs is None else dirs:
        paths = {key: Path(folder) / name for key, name in _FONT_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return Fonts(sans=paths["sans"], sans_bold=paths["sans-bold"], mono=paths["mono"])
    return None


class _Pdf(FPDF):
    def __init__(self, doc: Document, fonts: Fonts | None) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.doc = doc
        self.unicode = fonts is not None
        if fonts is not None:
            self.add_font("body", "", str(fonts.sans))
            self.add_font("body", "B", str(fonts.sans_bold))
            self.add_font("mono", "", str(fonts.mono))
            self.sans, self.mono = "body", "mono"
        else:
            self.sans, self.mono = "helvetica", "courier"
        self.set_margins(15, 16, 15)
        self.set_auto_page_break(True, margin=16)
        self.set_text_color(*_INK)

    def t(self, text: str) -> str:
        """``text`` as the fonts can draw it."""
        if self.unicode:
            return text
        return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font(self.sans, "", 7.5)
        self.set_text_color(*_GREY)
        self.cell(0, 4, self.t(self.doc.title), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(*_RULE)
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.ln(4)
        self.set_text_color(*_INK)

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font(self.sans, "", 7.5)
        self.set_text_color(*_GREY)
        self.cell(0, 4, self.t(self.doc.footer), align="L")
        self.set_x(self.l_margin)
        self.cell(0, 4, self.t(f"page {self.page_no()} of {{nb}}"), align="R")
        self.set_text_color(*_INK)


def render_pdf(doc: Document, *, fonts: Fonts | None = None, use_system_fonts: bool = True) -> bytes:
    """The statement as a PDF; ``fonts`` default to :func:`find_fonts` (core fonts without them)."""
    if fonts is None and use_system_fonts:
        fonts = find_fonts()
    pdf = _Pdf(doc, fonts)
    pdf.set_title(pdf.t(doc.title))
    pdf.set_author("dpsynth")
    pdf.set_subject(pdf.t(f"Privacy budget statement of dataset {doc.meta.get('dataset_id', '')}"))
    pdf.set_creator("dpsynth")
    if "generated_at" in doc.meta:
        pdf.set_creation_date(datetime.fromisoformat(doc.meta["generated_at"]))
    pdf.add_page()
    pdf.set_font(pdf.sans, "B", 16)
    pdf.multi_cell(0, 7.5, pdf.t(doc.title), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    with pdf.table(
        col_widths=(34, 146),
        text_align=("LEFT", "LEFT"),
        first_row_as_headings=False,
        borders_layout="NONE",
        line_height=5,
        padding=(0.6, 1, 0.6, 0),
    ) as facts:
        for label, value in doc.facts:
            row = facts.row()
            row.cell(pdf.t(label), style=FontFace(family=pdf.sans, emphasis="BOLD", size_pt=9, color=_GREY))
            row.cell(pdf.t(value), style=FontFace(family=pdf.sans, emphasis="", size_pt=9))
    for section in doc.sections:
        pdf.ln(3)
        # A short section moves whole to the next page rather than split; a long one keeps its
        # heading with its first lines.
        whole = _height(pdf, *section.blocks, limit=_SHORT)
        first = _height(pdf, *section.blocks[:1], limit=30)
        need = _HEADING + (whole if whole <= _SHORT else first + 10)
        if pdf.will_page_break(need):
            pdf.add_page()
        pdf.set_font(pdf.sans, "B", 12.5)
        pdf.cell(0, 7, pdf.t(section.title), border="B", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
        for index, block in enumerate(section.blocks):
            following = section.blocks[index + 1] if index + 1 < len(section.blocks) else None
            if not isinstance(block, Table) and isinstance(following, Table):
                # Words that introduce a table stay with its first rows.
                if pdf.will_page_break(_height(pdf, block) + _height(pdf, following, limit=25)):
                    pdf.add_page()
            _block(pdf, block)
    return bytes(pdf.output())


def _lines(pdf: _Pdf, width: float, text: str, family: str, style: str, size: float) -> int:
    pdf.set_font(family, style, size)
    return len(pdf.multi_cell(width, 1, pdf.t(text), dry_run=True, output="LINES")) or 1


def _height(pdf: _Pdf, *blocks: Paragraph | Note | Table, limit: float = math.inf) -> float:
    """How tall ``blocks`` will be on the page (mm), to decide page breaks before drawing them.

    Measuring stops past ``limit`` (and answers at most ``limit``): line breaking is slow.
    """
    height = 0.0
    for block in blocks:
        height += _block_height(pdf, block, limit - height)
        if height >= limit:
            return limit
    return height


def _block_height(pdf: _Pdf, block: Paragraph | Note | Table, limit: float) -> float:
    if isinstance(block, Paragraph):
        return _lines(pdf, pdf.epw, f"{block.lead} {block.text}", pdf.sans, "", _BODY) * 4.8 + 1.8
    if isinstance(block, Note):
        return _lines(pdf, pdf.epw, block.text, pdf.sans, "", _SMALL) * 3.8 + 1.5
    if not block.rows:
        return _lines(pdf, pdf.epw, block.empty, pdf.sans, "", _BODY) * 4.8 + 1.8
    total = sum(c.width for c in block.columns)
    widths = [pdf.epw * c.width / total - 2.4 for c in block.columns]
    rows = [*block.rows, *([block.total] if block.total else [])]
    if any(c.title for c in block.columns):
        rows.append(tuple(c.title for c in block.columns))
    height = 2.5
    for row in rows:
        lines = max(
            _lines(pdf, w, text, pdf.mono if c.mono else pdf.sans, "", _TABLE)
            for w, c, text in zip(widths, block.columns, row, strict=True)
        )
        height += lines * 3.9 + 2.2
        if height >= limit:
            break
    return height


def _block(pdf: _Pdf, block: Paragraph | Note | Table) -> None:
    if isinstance(block, Paragraph):
        if block.lead:
            pdf.set_font(pdf.sans, "B", _BODY)
            pdf.write(4.8, pdf.t(block.lead + " "))
        pdf.set_font(pdf.sans, "", _BODY)
        pdf.write(4.8, pdf.t(block.text))
        pdf.ln(4.8)
        pdf.ln(1.8)
    elif isinstance(block, Note):
        pdf.set_font(pdf.sans, "", _SMALL)
        pdf.set_text_color(*_GREY)
        pdf.multi_cell(0, 3.8, pdf.t(block.text), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*_INK)
        pdf.ln(1.5)
    else:
        _table(pdf, block)


def _table(pdf: _Pdf, table: Table) -> None:
    if not table.rows:
        pdf.set_font(pdf.sans, "", _BODY)
        pdf.multi_cell(0, 4.8, pdf.t(table.empty), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1.8)
        return
    headed = any(c.title for c in table.columns)
    size = _TABLE
    plain = FontFace(family=pdf.sans, emphasis="", size_pt=size)
    mono = FontFace(family=pdf.mono, emphasis="", size_pt=size - 0.5)
    bold = FontFace(family=pdf.sans, emphasis="BOLD", size_pt=size)
    pdf.set_font(pdf.sans, "", size)
    pdf.set_draw_color(*_RULE)
    pdf.set_line_width(0.2)
    with pdf.table(
        col_widths=tuple(c.width for c in table.columns),
        text_align=tuple("RIGHT" if c.align == "right" else "LEFT" for c in table.columns),
        v_align="TOP",
        first_row_as_headings=headed,
        headings_style=FontFace(family=pdf.sans, emphasis="BOLD", size_pt=size, fill_color=_HEAD_FILL),
        borders_layout="HORIZONTAL_LINES",
        line_height=3.9,
        padding=(1.1, 1.2, 1.1, 1.2),
        width=pdf.epw,
    ) as out:
        if headed:
            out.row([pdf.t(c.title) for c in table.columns])
        for cells in table.rows:
            row = out.row()
            for column, text in zip(table.columns, cells, strict=True):
                row.cell(pdf.t(text), style=mono if column.mono else plain)
        if table.total is not None:
            row = out.row()
            for text, span in table.total_cells:
                row.cell(pdf.t(text), style=bold, colspan=span)
    pdf.ln(2.5)
