//! The tray icon and its menu. The icon's colour (and shape) is the worst state: red if any
//! zombie, else yellow, else green, grey with no instance; its tooltip and the menu's first line
//! say the counts and the memory they hold. Icon, tooltip and menu follow the core's events,
//! debounced (one update per burst), never a timer: a new menu only when what it offers
//! changes, the summary line alone when only memory moved, a new icon only when the colour
//! does. With no tray host (no StatusNotifierWatcher on the session bus) it says so once and
//! the app carries on: the window and the API still work.
//!
//! Deliberately not here: the menu's model and items (`menu`) and what a click does
//! (`mod.rs`).

use super::menu::{self, Built, MenuModel, Worst};
use crate::core::app::App;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Notify;
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

pub const TRAY_ID: &str = "serena-tray";

/// How long after an event the tray updates: the events of one refresh make one update.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// The icon of a worst state (`icons/tray-<colour>.png`: 64 px, crisp at 2x in a 32 px panel;
/// 32 px on Windows, whose tray is 16 px).
pub fn icon(worst: Worst) -> Icon {
    let bytes: &'static [u8] = if cfg!(windows) {
        match worst {
            Worst::None => include_bytes!("../../icons/tray-grey-32.png"),
            Worst::Green => include_bytes!("../../icons/tray-green-32.png"),
            Worst::Yellow => include_bytes!("../../icons/tray-yellow-32.png"),
            Worst::Red => include_bytes!("../../icons/tray-red-32.png"),
        }
    } else {
        match worst {
            Worst::None => include_bytes!("../../icons/tray-grey.png"),
            Worst::Green => include_bytes!("../../icons/tray-green.png"),
            Worst::Yellow => include_bytes!("../../icons/tray-yellow.png"),
            Worst::Red => include_bytes!("../../icons/tray-red.png"),
        }
    };
    // The icons are part of the binary; a broken one is a build mistake the tests catch.
    #[allow(clippy::expect_used)]
    rgba(bytes)
        .and_then(|(pixels, w, h)| Icon::from_rgba(pixels, w, h).map_err(|e| e.to_string()))
        .expect("the tray icons are RGBA PNG files")
}

/// The pixels (RGBA, 8 bits each) of a PNG file, and its size.
fn rgba(png_file: &[u8]) -> Result<(Vec<u8>, u32, u32), String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut pixels = vec![0; reader.output_buffer_size().ok_or("too large")?];
    let frame = reader.next_frame(&mut pixels).map_err(|e| e.to_string())?;
    if frame.color_type != png::ColorType::Rgba {
        return Err(format!("{:?}, not RGBA", frame.color_type));
    }
    pixels.truncate(frame.buffer_size());
    Ok((pixels, frame.width, frame.height))
}

/// The model of what the tray shows now: the instances, the shared sessions' clients on their
/// Serenas' entries, and the asleep sessions (no Serena, so no entry) counted apart.
pub async fn model(app: &App, autostart: Option<bool>) -> MenuModel {
    let (asleep, awake): (Vec<_>, Vec<_>) = app
        .sessions()
        .list()
        .await
        .into_iter()
        .filter(|s| s.shared)
        .partition(|s| s.is_asleep());
    let clients = awake
        .into_iter()
        .map(|s| (s.pid, s.attached.len()))
        .collect();
    MenuModel::of(&app.core().instances(), asleep.len(), autostart).with_clients(&clients)
}

/// What the tray shows, on the thread of the event loop: the icon (`None` where the platform
/// has none to give), the model it shows and its menu.
pub struct Shown {
    tray: Option<TrayIcon>,
    model: MenuModel,
    built: Built,
}

impl Shown {
    /// Builds the menu of `model` and, if `tray`, the tray icon with it.
    pub fn create(model: MenuModel, tray: bool) -> Result<Shown, muda::Error> {
        let built = menu::build(&model)?;
        let tray = tray.then(|| icon_with(&model, &built)).flatten();
        Ok(Shown { tray, model, built })
    }

    /// Applies `next` over what shows now.
    pub fn update(&mut self, next: MenuModel) -> Result<(), Box<dyn std::error::Error>> {
        // What the system says, whatever a click made the check mark show meanwhile.
        let on = next.autostart.unwrap_or(false);
        if self.built.autostart.is_checked() != on {
            self.built.autostart.set_checked(on);
        }
        if self.model == next {
            return Ok(());
        }
        if self.model.same_shape(&next) {
            self.built.summary.set_text(menu::literal(&next.summary));
        } else {
            self.built = menu::build(&next)?;
            if let Some(tray) = &self.tray {
                tray.set_menu(Some(Box::new(self.built.menu.clone())));
            }
        }
        if let Some(tray) = &self.tray {
            if self.model.summary != next.summary {
                tray.set_tooltip(Some(&next.summary))?;
            }
            if self.model.worst != next.worst {
                tray.set_icon(Some(icon(next.worst)))?;
            }
        }
        self.model = next;
        Ok(())
    }
}

/// The tray icon with its menu; `None` (logged) if the platform has none to give.
fn icon_with(model: &MenuModel, built: &Built) -> Option<TrayIcon> {
    warn_without_host();
    let mut builder = TrayIconBuilder::new()
        .with_id(TRAY_ID)
        .with_icon(icon(model.worst))
        .with_tooltip(&model.summary)
        .with_menu(Box::new(built.menu.clone()))
        // A left click opens the dashboard (macOS, Windows; AppIndicator hosts on Linux show
        // the menu instead, which opens with "Open dashboard").
        .with_menu_on_left_click(false);
    if let Some(dir) = dirs::cache_dir() {
        // The icon files of this app's own, not a folder shared with every other tray app.
        builder = builder.with_temp_dir_path(dir.join(super::IDENTIFIER).join("tray-icons"));
    }
    match builder.build() {
        Ok(tray) => Some(tray),
        Err(e) => {
            tracing::warn!("no tray icon ({e}): the dashboard window and the API still work");
            None
        }
    }
}

/// On Linux, a tray icon is shown by a StatusNotifierWatcher on the session bus; without one
/// (some desktops, a bare X server) nothing shows it.
fn warn_without_host() {
    #[cfg(target_os = "linux")]
    {
        let host = zbus::blocking::Connection::session().and_then(|c| {
            zbus::blocking::fdo::DBusProxy::new(&c)?
                .name_has_owner("org.kde.StatusNotifierWatcher".try_into()?)
                .map_err(zbus::Error::from)
        });
        if !matches!(host, Ok(true)) {
            tracing::warn!(
                "no tray host (no org.kde.StatusNotifierWatcher on the session bus): the tray \
                 icon will not be seen until one starts; the dashboard window and the API work"
            );
        }
    }
}

/// Keeps the tray in step with the core for as long as the app runs: after the core's events
/// (debounced) and each `nudge`, the next model goes to `show` (which hands it to the event
/// loop; it returns false once there is none).
pub fn follow(
    app: &App,
    autostart: impl Fn() -> Option<bool> + Send + Sync + 'static,
    nudge: Arc<Notify>,
    show: impl Fn(MenuModel) -> bool + Send + Sync + 'static,
) {
    let mut rx = app.core().subscribe();
    // What the core found before this subscribed is shown by a first update.
    nudge.notify_one();
    let a = app.clone();
    app.spawn(async move {
        loop {
            tokio::select! {
                e = rx.recv() => if let Err(RecvError::Closed) = e { return },
                _ = nudge.notified() => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            // Everything that came meanwhile is in this one update.
            loop {
                match rx.try_recv() {
                    Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return,
                }
            }
            let next = model(&a, autostart()).await;
            if !show(next) {
                return;
            }
        }
    });
}
