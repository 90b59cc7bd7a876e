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

use super::autostart;
use super::menu::{self, Built, MenuModel, Worst};
use crate::core::app::{App, Show};
use std::sync::Arc;
use std::time::Duration;
use tauri::image::Image;
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Runtime};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Notify;

pub const TRAY_ID: &str = "serena-tray";

/// How long after an event the tray updates: the events of one refresh make one update.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// Asks the tray for an update outside the core's events (launch at login changed).
#[derive(Default)]
pub struct Nudge(pub Arc<Notify>);

/// The icon of a worst state (`icons/tray-<colour>.png`: 64 px, crisp at 2x in a 32 px panel;
/// 32 px on Windows, whose tray is 16 px).
pub fn icon(worst: Worst) -> Image<'static> {
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
    Image::from_bytes(bytes).expect("the tray icons are PNG files")
}

/// The model of what the tray shows now.
pub async fn model<R: Runtime>(handle: &AppHandle<R>, app: &App) -> MenuModel {
    let clients = app
        .sessions()
        .list()
        .await
        .into_iter()
        .filter(|s| s.shared)
        .map(|s| (s.pid, s.attached.len()))
        .collect();
    MenuModel::of(&app.core().instances(), autostart::state(handle)).with_clients(&clients)
}

/// Creates the tray icon with its menu; `None` (logged) if the platform has none to give.
pub fn create<R: Runtime>(
    handle: &AppHandle<R>,
    model: &MenuModel,
    built: &Built<R>,
) -> Option<TrayIcon<R>> {
    warn_without_host();
    let dir = handle
        .path()
        .app_cache_dir()
        .map(|d| d.join("tray-icons"))
        .ok();
    let mut builder = TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(model.worst))
        .tooltip(&model.summary)
        .menu(&built.menu)
        .show_menu_on_left_click(false)
        .on_tray_icon_event(|tray, event| {
            // A left click opens the dashboard (macOS, Windows; AppIndicator hosts on Linux
            // show the menu instead, which opens with "Open dashboard").
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                if let Some(app) = tray.app_handle().try_state::<App>() {
                    app.show(Show::Dashboard);
                }
            }
        });
    if let Some(dir) = dir {
        // The icon files of this app's own, not a folder shared with every other tray app.
        builder = builder.temp_dir_path(dir);
    }
    match builder.build(handle) {
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

/// Keeps the tray (when there is one) and its menu in step with the core, for as long as the
/// app runs. `shown` is what the tray was created with.
pub fn follow<R: Runtime>(
    handle: &AppHandle<R>,
    app: &App,
    tray: Option<TrayIcon<R>>,
    shown: (MenuModel, Built<R>),
) {
    let mut rx = app.core().subscribe();
    let nudge = handle.state::<Nudge>().0.clone();
    // What the core found before this subscribed is shown by a first update.
    nudge.notify_one();
    let (h, a) = (handle.clone(), app.clone());
    app.spawn(async move {
        let (mut model, mut built) = shown;
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
            let next = self::model(&h, &a).await;
            if let Err(e) = update(&h, tray.as_ref(), &model, &mut built, &next) {
                tracing::warn!("cannot update the tray: {e}");
                continue;
            }
            model = next;
        }
    });
}

/// Applies `next` over what shows `now`.
fn update<R: Runtime>(
    handle: &AppHandle<R>,
    tray: Option<&TrayIcon<R>>,
    now: &MenuModel,
    built: &mut Built<R>,
    next: &MenuModel,
) -> tauri::Result<()> {
    // What the system says, whatever a click made the check mark show meanwhile.
    let on = next.autostart.unwrap_or(false);
    if built.autostart.is_checked()? != on {
        built.autostart.set_checked(on)?;
    }
    if now == next {
        return Ok(());
    }
    if now.same_shape(next) {
        built.summary.set_text(menu::literal(&next.summary))?;
    } else {
        *built = menu::build(handle, next)?;
        if let Some(tray) = tray {
            tray.set_menu(Some(built.menu.clone()))?;
        }
    }
    if let Some(tray) = tray {
        if now.summary != next.summary {
            tray.set_tooltip(Some(&next.summary))?;
        }
        if now.worst != next.worst {
            tray.set_icon(Some(icon(next.worst)))?;
        }
    }
    Ok(())
}
