"""The connection chooser: the local stack or a saved profile; add, edit, delete, test, connect.

Left, the connections: "Local stack" first, then the saved profiles (``console.profiles``).
Right, the selected one: for a profile its name, NATS URLs, login kind with the fields that
kind needs (token, user and password, nkey seed, or a ``.creds`` file) and a TLS CA file. A
secret typed here goes to the OS keyring on "Save" and is never shown again: the field then
says it is stored, and stays empty unless the operator types a new one.

"Test connection" logs in with what the form says (saved or not) and asks every engine for a
``ping``; the answer, or what failed (bad URL, refused, auth failed, timeout, TLS), is shown
in words under the form. "Connect" saves pending changes, tests the same way, and only then
hands the target to the window (``connect_requested``), so a wrong token never costs the
current connection. Opened with ``open()`` (a nested loop in a qasync slot deadlocks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from console.connection import ProbeResult, Target, probe
from console.errors import ConsoleError, describe
from console.operations import Operation
from console.profiles import (
    AUTH_CREDS,
    AUTH_KINDS,
    AUTH_NONE,
    SECRET_KINDS,
    USER_KINDS,
    Profile,
    ProfileInvalid,
    ProfileStore,
    read_secret,
)
from widgets import theme
from widgets.confirm import ConfirmImpactDialog
from widgets.theme import Status

log = logging.getLogger(__name__)

LOCAL_KEY = ""
"""The list item of the local stack carries this instead of a profile name."""
NEW_NAME = "New connection"


class ConnectionDialog(QDialog):
    """Choose, edit and test connections (see the module docstring).

    Signals:
        connect_requested(object): the operator chose a :class:`~console.connection.Target`
            that answered a test (the local stack is not tested: the console starts it).
        profiles_changed(): a profile was saved or deleted.
        finished(int): inherited from QDialog.
    """

    connect_requested = Signal(object)
    profiles_changed = Signal()

    def __init__(
        self,
        store: ProfileStore,
        *,
        current: str | None = None,
        data_dir: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``current``: the profile name connected now (``LOCAL_KEY`` for the local stack)."""
        super().__init__(parent)
        self.setWindowTitle("Connections")
        self.setModal(True)
        self.store = store
        self.current = current
        self.editing: str | None = None
        """The profile in the form: its saved name, "" for a new one, None for the local stack."""
        self.test_op: Operation[Any] | None = None
        self.confirm: ConfirmImpactDialog | None = None
        self.last_result: ProbeResult | None = None
        self._dirty = False
        self._loading = False
        self._testing = False
        ink = theme.text_color(self.palette())

        self.list = QListWidget()
        self.list.setMinimumWidth(self.fontMetrics().averageCharWidth() * 28)
        self.list.currentItemChanged.connect(self._on_selected)
        self.new_button = QPushButton(theme.icon("mdi6.plus", ink), "New")
        self.new_button.setToolTip("Add a connection profile")
        self.new_button.clicked.connect(self.new_profile)
        self.delete_button = QPushButton(theme.icon("mdi6.delete-outline", ink), "Delete")
        self.delete_button.setToolTip("Delete the selected profile and its secret")
        self.delete_button.clicked.connect(self.delete_profile)
        list_buttons = QHBoxLayout()
        list_buttons.addWidget(self.new_button)
        list_buttons.addWidget(self.delete_button)
        list_buttons.addStretch(1)
        left = QVBoxLayout()
        left.addWidget(self.list, 1)
        left.addLayout(list_buttons)

        where = f" Its data lives in {data_dir}." if data_dir else ""
        self.local_text = QLabel(
            "<b>Local stack</b><br><br>Starts NATS, an engine and the capture inbox on this"
            " computer and connects to them. Quitting the console stops them again." + where
        )
        self.local_text.setWordWrap(True)
        self.local_text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. Production EU")
        self.servers = QLineEdit()
        self.servers.setPlaceholderText("nats://nats-1.example.com:4222, nats://nats-2...")
        self.servers.setToolTip("One or more NATS URLs of the same cluster, comma separated")
        self.auth = QComboBox()
        for kind, words in AUTH_KINDS.items():
            self.auth.addItem(words, kind)
        self.user = QLineEdit()
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.creds_file = QLineEdit()
        self.creds_file.setPlaceholderText("~/.nkeys/creds/operator/account/user.creds")
        self.tls_ca = QLineEdit()
        self.tls_ca.setPlaceholderText("optional: a PEM file with the CA of the servers")
        self.form = QFormLayout()
        self.form.addRow("Name:", self.name)
        self.form.addRow("NATS URLs:", self.servers)
        self.form.addRow("Login:", self.auth)
        self.form.addRow("User:", self.user)
        self.secret_label = QLabel("Token:")
        self.form.addRow(self.secret_label, self.secret)
        self.form.addRow("Credentials file:", self._with_browse(self.creds_file, "creds"))
        self.form.addRow("TLS CA file:", self._with_browse(self.tls_ca, "ca"))
        self.keyring_note = QLabel(
            "Tokens, passwords and seeds are kept in the OS keyring, never in the profiles"
            f" file ({store.path})."
        )
        self.keyring_note.setWordWrap(True)
        self.keyring_note.setEnabled(False)  # drawn in the secondary text colour
        profile_page = QWidget()
        profile_column = QVBoxLayout(profile_page)
        profile_column.setContentsMargins(0, 0, 0, 0)
        profile_column.addLayout(self.form)
        profile_column.addWidget(self.keyring_note)
        profile_column.addStretch(1)

        self.pages = QStackedWidget()
        self.pages.addWidget(self.local_text)
        self.pages.addWidget(profile_page)

        self.test_button = QPushButton(theme.icon("mdi6.lan-check", ink), "Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.save_button = QPushButton(theme.icon("mdi6.content-save-outline", ink), "Save")
        self.save_button.clicked.connect(self.save)
        self.status_icon = QLabel()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setMinimumHeight(self.fontMetrics().height() * 3)
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        form_buttons = QHBoxLayout()
        form_buttons.addWidget(self.test_button)
        form_buttons.addStretch(1)
        form_buttons.addWidget(self.save_button)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status_icon, 0, Qt.AlignmentFlag.AlignTop)
        status_row.addWidget(self.status, 1)
        right = QVBoxLayout()
        right.addWidget(self.pages, 1)
        right.addLayout(form_buttons)
        right.addLayout(status_row)

        body = QHBoxLayout()
        body.addLayout(left, 2)
        body.addSpacing(8)
        body.addLayout(right, 5)

        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        self.connect_button = QPushButton("Connect")
        self.connect_button.setStyleSheet(theme.primary_button_qss(self.palette()))
        self.connect_button.setDefault(True)
        self.connect_button.clicked.connect(self.connect_selected)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(self.close_button)
        bottom.addWidget(self.connect_button)

        layout = QVBoxLayout(self)
        layout.addLayout(body, 1)
        layout.addLayout(bottom)
        # Rows appear and vanish with the login kind; a size constraint would then resize the
        # shown dialog (some platforms warn, and the operator's size is theirs anyway).
        layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)

        for edit in (self.name, self.servers, self.user, self.secret, self.creds_file, self.tls_ca):
            edit.textEdited.connect(self._changed)
        self.auth.currentIndexChanged.connect(self._on_auth_changed)
        char = self.fontMetrics().averageCharWidth()
        self.resize(char * 118, self.fontMetrics().height() * 30)
        self.reload(select=current)

    # ---------------------------------------------------------------- the list

    def reload(self, select: str | None = None) -> None:
        """Fill the list from the profiles file and select ``select`` (a name or LOCAL_KEY)."""
        self._loading = True
        self.list.clear()
        ink = theme.text_color(self.palette())
        local = QListWidgetItem(theme.icon("mdi6.laptop", ink), "Local stack")
        local.setData(Qt.ItemDataRole.UserRole, LOCAL_KEY)
        self.list.addItem(local)
        try:
            profiles = self.store.load()
        except ProfileInvalid as exc:
            profiles = []
            self._say(describe(exc), Status.FAILING)
        for profile in profiles:
            item = QListWidgetItem(theme.icon("mdi6.server-network", ink), profile.name)
            item.setData(Qt.ItemDataRole.UserRole, profile.name)
            item.setToolTip(profile.url)
            self.list.addItem(item)
        self._loading = False
        row = next(
            (
                i
                for i in range(self.list.count())
                if self.list.item(i).data(Qt.ItemDataRole.UserRole) == (select or LOCAL_KEY)
            ),
            0,
        )
        self.list.setCurrentRow(row)
        self._on_selected(self.list.currentItem(), None)

    def names(self) -> list[str]:
        """The list's entries as shown ("Local stack" first)."""
        return [self.list.item(i).text() for i in range(self.list.count())]

    def select(self, name: str) -> None:
        """Select the profile ``name`` (LOCAL_KEY: the local stack)."""
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.list.setCurrentRow(i)
                return
        raise KeyError(name)

    def _on_selected(self, item: QListWidgetItem | None, _previous: object) -> None:
        if self._loading or item is None:
            return
        key = item.data(Qt.ItemDataRole.UserRole)
        self._clear_status()
        if key == LOCAL_KEY:
            self.editing = None
            self.pages.setCurrentIndex(0)
        elif key is None:  # a new profile not saved yet
            self.editing = ""
            self.pages.setCurrentIndex(1)
            self._fill(None)
        else:
            self.editing = str(key)
            self.pages.setCurrentIndex(1)
            try:
                self._fill(self.store.get(str(key)))
            except ProfileInvalid as exc:
                self._say(describe(exc), Status.FAILING)
        self._dirty = False
        self._update_buttons()

    def _fill(self, profile: Profile | None) -> None:
        self._loading = True
        self.name.setText(profile.name if profile else NEW_NAME)
        self.servers.setText(", ".join(profile.servers) if profile else "")
        self.auth.setCurrentIndex(max(0, self.auth.findData(profile.auth if profile else "none")))
        self.user.setText(profile.user if profile else "")
        self.creds_file.setText(profile.creds_file if profile else "")
        self.tls_ca.setText(profile.tls_ca if profile else "")
        self.secret.clear()
        self._loading = False
        self._on_auth_changed()

    def new_profile(self) -> None:
        """Add an unsaved "New connection" entry and edit it."""
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) is None:
                self.list.setCurrentRow(i)
                return
        ink = theme.text_color(self.palette())
        item = QListWidgetItem(theme.icon("mdi6.server-plus", ink), f"{NEW_NAME} (not saved)")
        item.setData(Qt.ItemDataRole.UserRole, None)
        self.list.addItem(item)
        self.list.setCurrentItem(item)
        self._fill(None)
        self._dirty = True
        self.name.setFocus()
        self.name.selectAll()
        self._update_buttons()

    def delete_profile(self) -> ConfirmImpactDialog | None:
        """Ask, then delete the selected profile and its keyring secret (an unsaved one goes
        at once: there is nothing to lose)."""
        if self.editing is None:
            return None
        if not self.editing:
            self._delete_confirmed()
            return None
        name = self.editing
        try:
            profile = self.store.get(name)
        except ConsoleError as exc:
            self._say(describe(exc), Status.FAILING)
            return None
        details = [f"NATS: {profile.url}"]
        if profile.needs_secret:
            details.append(f"Its {SECRET_KINDS[profile.auth]} is removed from the OS keyring.")
        if name == self.current:
            details.append("The console stays connected until you choose another connection.")
        dialog = ConfirmImpactDialog(
            "Delete connection profile",
            f"Delete the profile \u201c{name}\u201d?",
            confirm_text="Delete profile",
            details=details,
            parent=self,
        )
        dialog.accepted_with.connect(lambda _reason: self._delete_confirmed())
        dialog.finished.connect(dialog.deleteLater)
        self.confirm = dialog
        dialog.open()
        return dialog

    def _delete_confirmed(self) -> None:
        if self.editing is None:
            return
        if self.editing:
            try:
                self.store.delete(self.editing)
            except ConsoleError as exc:
                self._say(describe(exc), Status.FAILING)
                return
            self.profiles_changed.emit()
            deleted = self.editing
        else:
            deleted = ""
        self.reload(select=LOCAL_KEY)
        if deleted:
            self._say(f"Deleted the profile \u201c{deleted}\u201d and its secret.", Status.HEALTHY)

    # ---------------------------------------------------------------- the form

    def _with_browse(self, edit: QLineEdit, kind: str) -> QWidget:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        button = QPushButton("Browse\u2026")
        button.clicked.connect(lambda: self._browse(edit, kind))
        row.addWidget(button)
        return holder

    def _browse(self, edit: QLineEdit, kind: str) -> None:
        dialog = QFileDialog(self, "NATS credentials file" if kind == "creds" else "TLS CA file")
        dialog.setNameFilter(
            "NATS credentials (*.creds)" if kind == "creds" else "PEM (*.pem *.crt)"
        )
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(lambda path: (edit.setText(path), self._changed()))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _on_auth_changed(self, *_args: object) -> None:
        kind = str(self.auth.currentData())
        self.form.setRowVisible(self.user, kind in USER_KINDS)
        self.form.setRowVisible(self.secret, kind in SECRET_KINDS)
        self.form.setRowVisible(self.creds_file.parentWidget(), kind == AUTH_CREDS)
        if kind in SECRET_KINDS:
            what = SECRET_KINDS[kind]
            self.secret_label.setText(f"{what[0].upper()}{what[1:]}:")
            stored = bool(self.editing) and self.store.has_secret(str(self.editing))
            self.secret.setPlaceholderText(
                f"stored in the OS keyring \u2014 type to replace the {what}"
                if stored
                else f"the {what} (kept in the OS keyring)"
            )
        self._changed()

    def _changed(self, *_args: object) -> None:
        if self._loading:
            return
        self._dirty = True
        self.last_result = None
        self._update_buttons()

    def profile_from_form(self) -> Profile:
        """The profile the form describes, checked (``ProfileInvalid`` in words)."""
        return Profile(
            name=self.name.text(),
            servers=[s for s in self.servers.text().replace(",", " ").split() if s],
            auth=str(self.auth.currentData() or AUTH_NONE),
            user=self.user.text(),
            creds_file=self.creds_file.text(),
            tls_ca=self.tls_ca.text(),
        ).checked()

    def _secret_for(self, profile: Profile) -> str:
        """The secret typed, else the one stored for the profile being edited."""
        typed = self.secret.text()
        if typed or not profile.needs_secret:
            return typed
        return read_secret(self.editing) if self.editing else ""

    def target_from_form(self) -> Target:
        profile = self.profile_from_form()
        return Target.of_profile(profile, self._secret_for(profile))

    def save(self) -> bool:
        """Write the form to the profiles file (and the secret to the keyring)."""
        if self.editing is None:
            return True
        try:
            profile = self.profile_from_form()
            typed = self.secret.text()
            saved = self.store.save(profile, typed or None, replacing=self.editing)
        except ConsoleError as exc:
            self._say(describe(exc), Status.FAILING)
            return False
        self.profiles_changed.emit()
        self.reload(select=saved.name)
        self._say(f"Saved \u201c{saved.name}\u201d.", Status.HEALTHY)
        return True

    def _update_buttons(self) -> None:
        testing = self._testing
        profile = self.editing is not None
        self.save_button.setEnabled(profile and self._dirty and not testing)
        self.test_button.setEnabled(profile and not testing)
        self.delete_button.setEnabled(profile and not testing)
        self.connect_button.setEnabled(not testing)

    # ---------------------------------------------------------------- test and connect

    def test_connection(self, *, then_connect: bool = False) -> Operation[Any] | None:
        """Log in with what the form says and ask the engines for ``ping`` (in words below)."""
        try:
            target = self.target_from_form()
            target.login.connect_options()  # the files the login names exist
        except ConsoleError as exc:
            self._say(describe(exc), Status.FAILING)
            return None
        self._say(f"Connecting to {target.url.replace(',', ', ')}\u2026", Status.UNKNOWN)

        def done(result: ProbeResult) -> None:
            self.last_result = result
            self._say(result.words(), Status.parse(result.status))
            if then_connect:
                self.connect_requested.emit(target)
                self.accept()

        def failed(exc: BaseException) -> None:
            self._say(describe(exc), Status.FAILING)

        self.test_op = (
            Operation(self, lambda: probe(target.url, target.login), label="Test connection")
            .success(done)
            .failure(failed)
        )
        self.test_op.signals.finished.connect(self._test_finished)
        self._testing = True
        self.test_op.run()
        self._update_buttons()
        return self.test_op

    def _test_finished(self) -> None:
        self._testing = False
        self._update_buttons()

    def connect_selected(self) -> Operation[Any] | None:
        """Connect to the selection: the local stack at once, a profile once saved and tested."""
        if self.editing is None:
            self.connect_requested.emit(Target.local())
            self.accept()
            return None
        if self._dirty and not self.save():
            return None
        return self.test_connection(then_connect=True)

    # ---------------------------------------------------------------- status line

    def _say(self, text: str, status: Status) -> None:
        palette = self.palette()
        size = self.fontMetrics().height()
        if status == Status.UNKNOWN:
            pixmap = theme.icon_pixmap("mdi6.timer-sand", theme.text_color(palette), size)
        else:
            pixmap = theme.status_icon(status, palette).pixmap(size, size)
        self.status_icon.setPixmap(pixmap)
        self.status_icon.setVisible(True)
        self.status.setText(text)

    def _clear_status(self) -> None:
        self.status.setText("")
        self.status_icon.setVisible(False)

    def status_text(self) -> str:
        return self.status.text()

    def exec(self) -> int:
        """Refused: open it with ``open()`` (a nested loop in a qasync slot deadlocks)."""
        raise RuntimeError("ConnectionDialog must be opened with open(), not exec()")
