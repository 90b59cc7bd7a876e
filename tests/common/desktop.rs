//! A desktop of the test's own for the tray app: an X server (Xvfb) and a D-Bus session bus
//! (dbus-daemon), both started here and stopped when the test ends, so the app under test and
//! the test's own D-Bus peers share a bus that nothing else is on. On that bus, what a real
//! desktop provides and the tests read back:
//! - [`Watcher`]: a StatusNotifierWatcher (`org.kde.StatusNotifierWatcher`) where the app's tray
//!   item registers; the item's properties and its menu (`com.canonical.dbusmenu`: `GetLayout`
//!   lists the labels, `Event(id, "clicked")` clicks) are read and driven over the bus;
//! - [`NotificationServer`]: `org.freedesktop.Notifications`, recording every `Notify` and
//!   invoking actions the way a notification popup does (the `ActionInvoked` signal).
//!
//! These are the real protocols the app speaks (through libappindicator, libdbusmenu and
//! notify-rust); only the peers are the test's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// An X server and a session bus of the test's own.
pub struct Desktop {
    xvfb: Child,
    bus: Child,
    pub display: String,
    pub bus_address: String,
}

/// The first line a child prints on stdout.
fn first_line(child: &mut Child, what: &str) -> String {
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect(what);
    let line = line.trim().to_string();
    assert!(!line.is_empty(), "{what} printed nothing");
    line
}

impl Desktop {
    pub fn start() -> Desktop {
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x900x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (installed by the test command)");
        let display = format!(":{}", first_line(&mut xvfb, "the X display number"));
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (installed by the test command)");
        let bus_address = first_line(&mut bus, "the bus address");
        Desktop {
            xvfb,
            bus,
            display,
            bus_address,
        }
    }

    /// Puts a child on this desktop (after `Home::env`, which removes the display).
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .env("XDG_SESSION_TYPE", "x11")
            .env_remove("WAYLAND_DISPLAY");
    }

    /// Asks the top-level windows titled `title` to close, as a window manager's close button
    /// does (the `WM_DELETE_WINDOW` client message; there is no window manager here to send
    /// it). Python with python-xlib from the test venv. Returns how many windows were asked.
    pub fn close_windows(&self, title: &str) -> usize {
        const SCRIPT: &str = r#"
import sys
from Xlib import X, display, error, protocol
d = display.Display()
protocols = d.intern_atom("WM_PROTOCOLS")
delete = d.intern_atom("WM_DELETE_WINDOW")
asked = 0
def walk(w):
    global asked
    try:
        children = w.query_tree().children
    except error.XError:
        return  # gone meanwhile (toolkits make and drop helper windows all the time)
    for c in children:
        try:
            if c.get_wm_name() == sys.argv[1] and delete in (c.get_wm_protocols() or []):
                c.send_event(protocol.event.ClientMessage(window=c, client_type=protocols,
                    data=(32, [delete, X.CurrentTime, 0, 0, 0])))
                asked += 1
        except error.XError:
            continue
        walk(c)
walk(d.screen().root)
d.flush()
print(asked)
"#;
        self.x_script(SCRIPT, title)
            .trim()
            .parse()
            .expect("a count")
    }

    /// Runs a python-xlib `script` (argument: `title`) on this display; its stdout.
    fn x_script(&self, script: &str, title: &str) -> String {
        let out = Command::new(super::venv().join("bin/python3"))
            .args(["-c", script, title])
            .env("DISPLAY", &self.display)
            .output()
            .expect("python3 with python-xlib (the test command installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `WM_CLASS` (instance, class) of each top-level window titled `title`: what a desktop
    /// entry's `StartupWMClass` must name for the desktop to tie the window to the entry.
    pub fn window_classes(&self, title: &str) -> Vec<(String, String)> {
        const SCRIPT: &str = r#"
import sys
from Xlib import display, error
d = display.Display()
def walk(w):
    try:
        children = w.query_tree().children
    except error.XError:
        return
    for c in children:
        try:
            if c.get_wm_name() == sys.argv[1]:
                cls = c.get_wm_class()
                if cls:
                    print(cls[0] + "\t" + cls[1])
        except error.XError:
            continue
        walk(c)
walk(d.screen().root)
"#;
        self.x_script(SCRIPT, title)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(i, c)| (i.to_owned(), c.to_owned()))
            .collect()
    }

    /// A connection of the test's own that owns `name` and serves `iface` at `path`.
    fn serve<I: zbus::object_server::Interface>(
        &self,
        name: &str,
        path: &str,
        iface: I,
    ) -> Connection {
        zbus::blocking::connection::Builder::address(self.bus_address.as_str())
            .expect("bus address")
            .name(name)
            .expect("name")
            .serve_at(path, iface)
            .expect("serve")
            .build()
            .unwrap_or_else(|e| panic!("{name} on the test bus: {e}"))
    }

    /// A connection of the test's own to the bus.
    pub fn connect(&self) -> Connection {
        zbus::blocking::connection::Builder::address(self.bus_address.as_str())
            .expect("bus address")
            .build()
            .expect("connect to the test bus")
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for c in [&mut self.bus, &mut self.xvfb] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An item registered with the watcher: its bus name and object path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub service: String,
    pub path: String,
}

struct WatcherIface {
    items: Arc<Mutex<Vec<Item>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl WatcherIface {
    /// libappindicator sends its object path; others send a bus name (and use the default path).
    fn register_status_notifier_item(
        &mut self,
        service: &str,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let item = if service.starts_with('/') {
            Item {
                service: sender,
                path: service.to_string(),
            }
        } else {
            Item {
                service: service.to_string(),
                path: "/StatusNotifierItem".into(),
            }
        };
        self.items.lock().expect("items").push(item);
    }

    fn register_status_notifier_host(&mut self, _service: &str) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        let items = self.items.lock().expect("items");
        items
            .iter()
            .map(|i| format!("{}{}", i.service, i.path))
            .collect()
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// The test's StatusNotifierWatcher: the tray host of this desktop.
pub struct Watcher {
    conn: Connection,
    items: Arc<Mutex<Vec<Item>>>,
}

impl Watcher {
    pub fn start(desktop: &Desktop) -> Watcher {
        let items = Arc::new(Mutex::new(vec![]));
        let conn = desktop.serve(
            "org.kde.StatusNotifierWatcher",
            "/StatusNotifierWatcher",
            WatcherIface {
                items: items.clone(),
            },
        );
        Watcher { conn, items }
    }

    pub fn items(&self) -> Vec<Item> {
        self.items.lock().expect("items").clone()
    }

    /// The one item registered (waits for it).
    pub fn item(&self, timeout: Duration) -> Item {
        super::wait_for("the tray item to register", timeout, || {
            self.items().into_iter().next()
        })
    }

    /// A property of the item's `org.kde.StatusNotifierItem` interface.
    pub fn property(&self, item: &Item, name: &str) -> OwnedValue {
        let reply = self
            .conn
            .call_method(
                Some(item.service.as_str()),
                item.path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.kde.StatusNotifierItem", name),
            )
            .unwrap_or_else(|e| panic!("property {name}: {e}"));
        reply.body().deserialize::<OwnedValue>().expect(name)
    }

    fn string_property(&self, item: &Item, name: &str) -> String {
        String::try_from(self.property(item, name)).unwrap_or_default()
    }

    /// The file of the item's icon (libappindicator names it by path).
    pub fn icon_file(&self, item: &Item) -> PathBuf {
        let name = self.string_property(item, "IconName");
        let theme = self.string_property(item, "IconThemePath");
        let path = Path::new(&name);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            Path::new(&theme).join(format!("{name}.png"))
        }
    }

    /// The colour of the item's icon, as the nearest of the tray's four.
    pub fn icon_colour(&self, item: &Item) -> &'static str {
        nearest_colour(&self.icon_file(item))
    }

    fn menu_path(&self, item: &Item) -> String {
        OwnedObjectPath::try_from(self.property(item, "Menu"))
            .expect("the item's Menu is an object path")
            .to_string()
    }

    /// The item's whole menu, read with `GetLayout(0, -1, [])`.
    pub fn menu(&self, item: &Item) -> MenuNode {
        let reply = self
            .conn
            .call_method(
                Some(item.service.as_str()),
                self.menu_path(item).as_str(),
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .expect("GetLayout");
        let (_revision, layout): (u32, Layout) =
            reply.body().deserialize().expect("a dbusmenu layout");
        MenuNode::from_layout(layout)
    }

    /// Clicks the menu item `id`, as a tray host does.
    pub fn click(&self, item: &Item, id: i32) {
        let now = 0u32;
        self.conn
            .call_method(
                Some(item.service.as_str()),
                self.menu_path(item).as_str(),
                Some("com.canonical.dbusmenu"),
                "Event",
                &(id, "clicked", Value::from(0i32), now),
            )
            .expect("Event clicked");
    }
}

/// A dbusmenu layout node on the wire: `(id, properties, children)`.
type Layout = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);

/// One node of a dbusmenu layout.
#[derive(Debug, Clone)]
pub struct MenuNode {
    pub id: i32,
    /// As shown: GTK's mnemonic underscores removed (`__` is a shown `_`).
    pub label: String,
    pub enabled: bool,
    pub visible: bool,
    /// `Some(checked)` for a check item.
    pub checked: Option<bool>,
    pub children: Vec<MenuNode>,
}

impl MenuNode {
    fn from_layout(layout: Layout) -> MenuNode {
        let (id, props, children) = layout;
        let get_bool = |k: &str| props.get(k).and_then(|v| bool::try_from(v).ok());
        let label = props
            .get("label")
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default();
        let checked = props
            .get("toggle-type")
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .filter(|t| t == "checkmark")
            .map(|_| {
                props
                    .get("toggle-state")
                    .and_then(|v| i32::try_from(v).ok())
                    == Some(1)
            });
        MenuNode {
            id,
            label: shown_label(&label),
            enabled: get_bool("enabled").unwrap_or(true),
            visible: get_bool("visible").unwrap_or(true),
            checked,
            children: children
                .into_iter()
                .map(|c| {
                    let c: Layout = c.try_into().expect("a child layout");
                    MenuNode::from_layout(c)
                })
                .collect(),
        }
    }

    /// Every visible node, depth first.
    pub fn all(&self) -> Vec<&MenuNode> {
        let mut out = vec![];
        for c in self.children.iter().filter(|c| c.visible) {
            out.push(c);
            out.extend(c.all());
        }
        out
    }

    /// The labels of the visible top-level items.
    pub fn labels(&self) -> Vec<String> {
        self.children
            .iter()
            .filter(|c| c.visible)
            .map(|c| c.label.clone())
            .collect()
    }

    /// The first visible node whose label starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Option<&MenuNode> {
        self.all().into_iter().find(|n| n.label.starts_with(prefix))
    }
}

/// A GTK mnemonic label as shown: `_` marks the next character, `__` is an underscore.
fn shown_label(label: &str) -> String {
    let mut out = String::new();
    let mut chars = label.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '_' {
            if chars.peek() == Some(&'_') {
                chars.next();
                out.push('_');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The tray colour nearest to the average of an icon's opaque, coloured pixels.
pub fn nearest_colour(png_file: &Path) -> &'static str {
    let file = std::fs::File::open(png_file)
        .unwrap_or_else(|e| panic!("icon {}: {e}", png_file.display()));
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgba, "an RGBA icon");
    let (mut sum, mut n) = ([0u64; 3], 0u64);
    for px in buf[..info.buffer_size()].chunks_exact(4) {
        let white = px[0] > 230 && px[1] > 230 && px[2] > 230;
        if px[3] > 200 && !white {
            for k in 0..3 {
                sum[k] += u64::from(px[k]);
            }
            n += 1;
        }
    }
    assert!(n > 0, "an icon with colour");
    let avg = sum.map(|s| (s / n) as i64);
    [
        ("green", [46, 160, 67]),
        ("yellow", [212, 167, 44]),
        ("red", [207, 34, 46]),
        ("grey", [140, 149, 159]),
    ]
    .into_iter()
    .min_by_key(|(_, c)| (0..3).map(|k| (avg[k] - c[k]).pow(2)).sum::<i64>())
    .map(|(name, _)| name)
    .expect("four colours")
}

/// One `Notify` the server received.
#[derive(Debug, Clone)]
pub struct Notified {
    pub id: u32,
    pub app_name: String,
    pub summary: String,
    pub body: String,
    /// Action keys (the labels left out).
    pub actions: Vec<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

struct NotificationsIface {
    received: Arc<Mutex<Vec<Notified>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl NotificationsIface {
    fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &mut self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut received = self.received.lock().expect("received");
        let id = received.len() as u32 + 1;
        received.push(Notified {
            id,
            app_name,
            summary,
            body,
            actions: actions.chunks(2).map(|c| c[0].clone()).collect(),
            at: std::time::Instant::now(),
        });
        id
    }

    fn close_notification(&self, _id: u32) {}

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "serena-tray-tests".into(),
            "serena-tray".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";

/// The test's notification server: records what it is asked to show.
pub struct NotificationServer {
    conn: Connection,
    received: Arc<Mutex<Vec<Notified>>>,
}

impl NotificationServer {
    pub fn start(desktop: &Desktop) -> NotificationServer {
        let received = Arc::new(Mutex::new(vec![]));
        let conn = desktop.serve(
            "org.freedesktop.Notifications",
            NOTIFICATIONS_PATH,
            NotificationsIface {
                received: received.clone(),
            },
        );
        NotificationServer { conn, received }
    }

    pub fn received(&self) -> Vec<Notified> {
        self.received.lock().expect("received").clone()
    }

    /// The user clicks `action` of notification `id` (then it closes, as popups do).
    pub fn invoke(&self, id: u32, action: &str) {
        self.conn
            .emit_signal(
                None::<&str>,
                NOTIFICATIONS_PATH,
                "org.freedesktop.Notifications",
                "ActionInvoked",
                &(id, action),
            )
            .expect("ActionInvoked");
        self.conn
            .emit_signal(
                None::<&str>,
                NOTIFICATIONS_PATH,
                "org.freedesktop.Notifications",
                "NotificationClosed",
                &(id, 2u32),
            )
            .expect("NotificationClosed");
    }
}

/// The tray app `app`'s window process (`serena-tray-window`), if one runs.
pub fn window_process(app: u32) -> Option<u32> {
    super::find_under(app, |p| {
        p.cmdline
            .first()
            .is_some_and(|c| c.ends_with("/serena-tray-window"))
    })
}

/// Whether the tray app `app` has its dashboard window open: a WebKit web process under it
/// (under its window process).
pub fn has_window(app: u32) -> bool {
    super::find_under(app, |p| {
        p.cmdline
            .first()
            .is_some_and(|c| c.ends_with("WebKitWebProcess"))
    })
    .is_some()
}

/// A tray app started minimized on a test's desktop, its tray menu up.
pub struct TrayApp {
    pub pid: u32,
    /// The port of its API and page.
    pub port: u16,
    pub api: super::Daemon,
    pub item: Item,
}

impl TrayApp {
    /// Starts the tray app `exe` for `home` on `desktop` (minimized, free ports, `extra`
    /// arguments; output discarded), owned by `reaper`, and waits up to `wait` until its tray
    /// menu's summary counts `live` live instances.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        exe: &Path,
        home: &super::Home,
        desktop: &Desktop,
        watcher: &Watcher,
        reaper: &mut super::Reaper,
        live: usize,
        extra: &[&str],
        wait: Duration,
    ) -> TrayApp {
        let port = super::free_port();
        let mut cmd = Command::new(exe);
        home.env(&mut cmd);
        desktop.env(&mut cmd);
        let app = cmd
            .arg("--minimized")
            .arg("--serena-home")
            .arg(home.serena_home())
            .args(["--port", &port.to_string()])
            .args(["--tray-protocol-port", &super::free_port().to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serena-tray");
        let pid = reaper.adopt(app);
        let api = super::Daemon::attach_app(home, port, pid);
        let item = watcher.item(wait);
        let summary = format!("{live} live");
        super::wait_for("every instance in the tray menu", wait, || {
            watcher
                .menu(&item)
                .labels()
                .first()
                .filter(|l| l.starts_with(&summary))
                .map(|_| ())
        });
        TrayApp {
            pid,
            port,
            api,
            item,
        }
    }
}
