"""A directed flow drawn top-down on a canvas: boxes for nodes, labelled arrows for edges.

Braze Canvas and Customer.io journeys draw a workflow this way (UI.md): the start at the top,
steps flowing down, branches side by side, and on every box its live counts. The widget knows
nothing of workflows: it takes :class:`FlowNode` and :class:`FlowEdge` values and lays them out
in layers (a node sits one layer below the deepest node that leads to it, not counting edges
that go back up), so a branch's two arms stand side by side. Edges that go back up (a loop)
curve round the right-hand side.

``set_graph`` lays out and draws; ``set_counts`` and ``set_problem`` update one box in place
(live counts refresh every few seconds without moving anything). Clicking a box selects it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsObject,
    QGraphicsScene,
    QGraphicsSceneMouseEvent,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from widgets import theme
from widgets.theme import Status

NODE_WIDTH_CHARS = 34
LAYER_GAP = 56.0
COLUMN_GAP = 40.0


@dataclass(frozen=True)
class FlowNode:
    """One box: ``kind`` in small capitals over the ``title``, then ``lines`` of summary and
    ``counts`` (one line); ``problem``, when given, is shown in red and outlines the box.
    ``shape``: "box" (a step), "start" (the trigger) or "end" (an exit)."""

    key: str
    title: str
    kind: str = ""
    lines: Sequence[str] = ()
    counts: str = ""
    problem: str = ""
    shape: str = "box"
    icon: str = ""


@dataclass(frozen=True)
class FlowEdge:
    """An arrow from ``source`` to ``target`` with an optional ``label`` ("then", "timeout")."""

    source: str
    target: str
    label: str = ""


@dataclass
class _Layout:
    layer: dict[str, int] = field(default_factory=dict)
    column: dict[str, float] = field(default_factory=dict)


def layered(nodes: Sequence[FlowNode], edges: Iterable[FlowEdge]) -> _Layout:
    """Layers by longest path from the first node over forward edges (back edges of a depth
    first walk are ignored), then columns centred under each layer."""
    keys = [n.key for n in nodes]
    out: dict[str, list[str]] = {k: [] for k in keys}
    for e in edges:
        if e.source in out and e.target in out and e.target not in out[e.source]:
            out[e.source].append(e.target)
    # Depth-first from each root in order: an edge to a node on the current path goes back.
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}

    def walk(key: str) -> None:
        state[key] = 1
        for nxt in out[key]:
            if state.get(nxt) == 1:
                back.add((key, nxt))
            elif nxt not in state:
                walk(nxt)
        state[key] = 2

    for key in keys:
        if key not in state:
            walk(key)
    layer = dict.fromkeys(keys, 0)
    for _ in range(len(keys)):  # longest path over a DAG: at most len(keys) rounds
        moved = False
        for src in keys:
            for dst in out[src]:
                if (src, dst) not in back and layer[dst] < layer[src] + 1:
                    layer[dst] = layer[src] + 1
                    moved = True
        if not moved:
            break
    rows: dict[int, list[str]] = {}
    for key in keys:
        rows.setdefault(layer[key], []).append(key)
    # Top-down, each layer ordered by the mean column of the boxes that lead to it (ties keep
    # the definition's order), so arrows cross as little as a single pass can manage.
    into: dict[str, list[str]] = {k: [] for k in keys}
    for src in keys:
        for dst in out[src]:
            if (src, dst) not in back:
                into[dst].append(src)
    column: dict[str, float] = {}
    order = {k: i for i, k in enumerate(keys)}
    for row in sorted(rows):
        members = rows[row]

        def centre(key: str) -> float:
            placed = [column[s] for s in into[key] if s in column]
            return sum(placed) / len(placed) if placed else float(order[key])

        if row > 0:
            members.sort(key=lambda k: (centre(k), order[k]))
        for i, key in enumerate(members):
            column[key] = i - (len(members) - 1) / 2
    return _Layout(layer, column)


class _NodeItem(QGraphicsObject):
    """One box; paints itself from its :class:`FlowNode`."""

    def __init__(self, node: FlowNode, width: float, font: QFont, palette_owner: QWidget) -> None:
        super().__init__()
        self.node = node
        self._font = font
        self._owner = palette_owner
        self._width = width
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip(node.problem or "")
        self._height = self._measure()

    def _metrics(self) -> QFontMetricsF:
        return QFontMetricsF(self._font)

    def _text_lines(self) -> list[tuple[str, str]]:
        """(role, text) per drawn line."""
        n = self.node
        lines: list[tuple[str, str]] = []
        if n.kind:
            lines.append(("kind", n.kind.upper()))
        lines.append(("title", n.title))
        lines += [("line", text) for text in n.lines]
        if n.counts:
            lines.append(("counts", n.counts))
        if n.problem:
            lines.append(("problem", "\u26a0 " + n.problem))
        return lines

    def _wrapped(self) -> list[tuple[str, str]]:
        fm = self._metrics()
        room = self._width - 20
        out: list[tuple[str, str]] = []
        for role, text in self._text_lines():
            if role == "problem":
                words, line = text.split(), ""
                for word in words:
                    trial = f"{line} {word}".strip()
                    if fm.horizontalAdvance(trial) > room and line:
                        out.append((role, line))
                        line = word
                    else:
                        line = trial
                out.append((role, line))
            else:
                out.append((role, fm.elidedText(text, Qt.TextElideMode.ElideRight, room)))
        return out

    def _measure(self) -> float:
        return 12 + len(self._wrapped()) * self._metrics().lineSpacing() + 4

    def set_node(self, node: FlowNode) -> None:
        self.prepareGeometryChange()
        self.node = node
        self.setToolTip(node.problem or "")
        self._height = self._measure()
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(-self._width / 2 - 3, -3, self._width + 6, self._height + 6)

    def box(self) -> QRectF:
        return QRectF(-self._width / 2, 0, self._width, self._height)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        palette = self._owner.palette()
        fg = theme.text_color(palette)
        muted = theme.secondary_text_color(palette)
        failing = theme.status_color(Status.FAILING, palette)
        healthy = theme.status_color(Status.HEALTHY, palette)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = theme.surface_color(palette)
        if self.node.shape == "start":
            fill = theme.tint(Status.HEALTHY, palette, 0.14)
        elif self.node.shape == "end":
            fill = theme.blend(fill, muted, 0.12)
        border = theme.border_color(palette)
        width = 1.0
        if self.node.problem:
            border, width = failing, 2.0
        if self.isSelected():
            border, width = palette.highlight().color(), 3.0
        painter.setPen(QPen(border, width))
        painter.setBrush(QBrush(fill))
        radius = self._height / 2 if self.node.shape == "end" else 8.0
        painter.drawRoundedRect(self.box(), min(radius, 16.0), min(radius, 16.0))
        fm = self._metrics()
        y = 8 + fm.ascent()
        for role, text in self._wrapped():
            font = QFont(self._font)
            colour = fg
            if role == "kind":
                font.setPointSizeF(font.pointSizeF() * 0.8)
                font.setBold(True)
                colour = healthy if self.node.shape == "start" else muted
            elif role == "title":
                font.setBold(True)
            elif role == "line":
                colour = muted
            elif role == "counts":
                colour = fg
            elif role == "problem":
                colour = failing
            painter.setFont(font)
            painter.setPen(colour)
            painter.drawText(QPointF(-self._width / 2 + 10, y), text)
            y += fm.lineSpacing()

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        scene = self.scene()
        if scene is not None:
            scene.clearSelection()
        self.setSelected(True)
        event.accept()


class _EdgeItem(QGraphicsItem):
    """An arrow between two boxes, with its label beside the middle."""

    def __init__(
        self, edge: FlowEdge, a: _NodeItem, b: _NodeItem, back: bool, owner: QWidget, font: QFont
    ) -> None:
        super().__init__()
        self.edge = edge
        self._owner = owner
        self._font = font
        self.setZValue(-1)
        start = a.mapToScene(a.box().center().x(), a.box().bottom())
        end = b.mapToScene(b.box().center().x(), b.box().top())
        path = QPainterPath(start)
        if back:
            # Up the right-hand side, round both boxes.
            right = max(a.sceneBoundingRect().right(), b.sceneBoundingRect().right()) + 30
            out = a.mapToScene(a.box().right(), a.box().center().y())
            into = b.mapToScene(b.box().right(), b.box().center().y())
            path = QPainterPath(out)
            path.cubicTo(QPointF(right, out.y()), QPointF(right, into.y()), into)
            self._tip, self._tip_from = into, QPointF(right, into.y())
            self._label_at = QPointF(right + 4, (out.y() + into.y()) / 2)
        else:
            mid = (start.y() + end.y()) / 2
            path.cubicTo(QPointF(start.x(), mid), QPointF(end.x(), mid), end)
            self._tip, self._tip_from = end, QPointF(end.x(), mid)
            self._label_at = path.pointAtPercent(0.5) + QPointF(6, 4)
        self._path = path

    def boundingRect(self) -> QRectF:
        fm = QFontMetricsF(self._font)
        label = QRectF(self._label_at.x(), self._label_at.y() - fm.height(), 200, fm.height() * 2)
        return self._path.boundingRect().adjusted(-8, -8, 8, 8).united(label)

    def shape(self) -> QPainterPath:
        return QPainterPathStroker().createStroke(self._path)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        palette = self._owner.palette()
        colour = theme.secondary_text_color(palette)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(colour, 1.4))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self._path)
        # The arrowhead points along the last stretch of the curve.
        tip, back = self._tip, self._tip_from
        dx, dy = tip.x() - back.x(), tip.y() - back.y()
        length = max((dx * dx + dy * dy) ** 0.5, 1e-6)
        ux, uy = dx / length, dy / length
        size = 8.0
        left = QPointF(tip.x() - ux * size - uy * size / 2, tip.y() - uy * size + ux * size / 2)
        right = QPointF(tip.x() - ux * size + uy * size / 2, tip.y() - uy * size - ux * size / 2)
        painter.setBrush(QBrush(colour))
        painter.drawPolygon(QPolygonF([tip, left, right]))
        if self.edge.label:
            font = QFont(self._font)
            font.setPointSizeF(font.pointSizeF() * 0.85)
            font.setItalic(True)
            painter.setFont(font)
            painter.setPen(theme.text_color(palette))
            painter.drawText(self._label_at, self.edge.label)


class FlowGraphView(QGraphicsView):
    """The canvas (see the module docstring).

    Signals:
        node_selected(str): a box was clicked (its key); "" when the selection was cleared.
    """

    node_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.items_by_key: dict[str, _NodeItem] = {}
        self.edges: list[_EdgeItem] = []
        self._layout = _Layout()
        self.scene().selectionChanged.connect(self._selection_changed)

    def set_graph(self, nodes: Sequence[FlowNode], edges: Sequence[FlowEdge]) -> None:
        """Lay out and draw ``nodes`` and ``edges`` (replacing what was drawn)."""
        scene = self.scene()
        selected = self.selected_key()
        scene.blockSignals(True)
        scene.clear()
        scene.blockSignals(False)
        self.items_by_key.clear()
        self.edges.clear()
        font = QFont(self.font())
        width = QFontMetricsF(font).averageCharWidth() * NODE_WIDTH_CHARS
        self._layout = layered(nodes, edges)
        heights: dict[int, float] = {}
        for node in nodes:
            item = _NodeItem(node, width, font, self)
            self.items_by_key[node.key] = item
            layer = self._layout.layer[node.key]
            heights[layer] = max(heights.get(layer, 0.0), item.box().height())
        tops: dict[int, float] = {}
        y = 0.0
        for layer in sorted(heights):
            tops[layer] = y
            y += heights[layer] + LAYER_GAP
        for key, item in self.items_by_key.items():
            x = self._layout.column[key] * (width + COLUMN_GAP)
            item.setPos(x, tops[self._layout.layer[key]])
            scene.addItem(item)
        for edge in edges:
            a, b = self.items_by_key.get(edge.source), self.items_by_key.get(edge.target)
            if a is None or b is None:
                continue
            back = self._layout.layer[edge.target] <= self._layout.layer[edge.source]
            line = _EdgeItem(edge, a, b, back, self, font)
            scene.addItem(line)
            self.edges.append(line)
        scene.setSceneRect(scene.itemsBoundingRect().adjusted(-40, -20, 120, 40))
        if selected in self.items_by_key:
            self.select(selected)

    def set_counts(self, key: str, counts: str) -> None:
        """Replace one box's counts line (nothing moves)."""
        item = self.items_by_key.get(key)
        if item is not None and item.node.counts != counts:
            node = item.node
            item.set_node(FlowNode(node.key, node.title, node.kind, node.lines, counts,
                                   node.problem, node.shape, node.icon))  # fmt: skip

    def node(self, key: str) -> FlowNode | None:
        item = self.items_by_key.get(key)
        return item.node if item is not None else None

    def layer_of(self, key: str) -> int:
        return self._layout.layer[key]

    def column_of(self, key: str) -> float:
        return self._layout.column[key]

    def select(self, key: str) -> None:
        item = self.items_by_key.get(key)
        self.scene().clearSelection()
        if item is not None:
            item.setSelected(True)
            self.ensureVisible(item)

    def selected_key(self) -> str:
        for key, item in self.items_by_key.items():
            if item.isSelected():
                return key
        return ""

    def _selection_changed(self) -> None:
        self.node_selected.emit(self.selected_key())
