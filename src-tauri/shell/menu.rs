//! The tray menu: a plain model computed from the instances and the number of asleep shared
//! sessions ([`MenuModel::of`], unit tested),
//! the menu built from it ([`build`], muda's), and the ids its clicks come back with
//! ([`Action::parse`]). The menu is rebuilt only when the model changes; a change of the
//! summary line alone (memory moves all the time) is applied to that one item.
//!
//! Deliberately not here: when the menu is rebuilt (`tray`) and what a click does (`mod.rs`,
//! one line each into the app handle).

use crate::core::model::{Instance, ProcessId, State};
use muda::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};

pub const SUMMARY: &str = "summary";
pub const OPEN: &str = "open";
pub const KILL_ZOMBIES: &str = "kill-zombies";
pub const NEW_SESSION: &str = "new-session";
pub const AUTOSTART: &str = "autostart";
pub const QUIT: &str = "quit";

/// What a click on a menu item asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    OpenDashboard,
    KillZombies,
    NewSession,
    ToggleAutostart,
    Quit,
    /// Open the dashboard on this instance's tab.
    ShowInstance(ProcessId),
    /// Open the instance's own Serena dashboard in the browser.
    OpenInstanceDashboard(ProcessId),
    Kill(ProcessId),
}

impl Action {
    /// The action of a menu item id; `None` for an item that does nothing (the summary).
    pub fn parse(id: &str) -> Option<Action> {
        match id {
            OPEN => return Some(Action::OpenDashboard),
            KILL_ZOMBIES => return Some(Action::KillZombies),
            NEW_SESSION => return Some(Action::NewSession),
            AUTOSTART => return Some(Action::ToggleAutostart),
            QUIT => return Some(Action::Quit),
            _ => {}
        }
        let mut parts = id.strip_prefix("instance/")?.split('/');
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        let action = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let make = match action {
            "show" => Action::ShowInstance,
            "dashboard" => Action::OpenInstanceDashboard,
            "kill" => Action::Kill,
            _ => return None,
        };
        Some(make(ProcessId { pid, start_time }))
    }
}

/// The id of an instance's submenu item for `action` (see [`Action::parse`]).
fn instance_id(id: ProcessId, action: &str) -> String {
    format!("instance/{}/{}/{action}", id.pid, id.start_time)
}

/// The worst state shown: what colour the tray icon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Worst {
    /// No instance at all.
    None,
    Green,
    Yellow,
    Red,
}

/// One instance's entry: its submenu.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: ProcessId,
    /// `✕ 4242 - webapp`: the tab's label behind the tab's shape cue.
    pub label: String,
    /// Its own dashboard can be opened (it has one and its process runs).
    pub has_dashboard: bool,
    /// Kill is offered (never for a registered PID that is not verifiably Serena).
    pub killable: bool,
    /// `dead` records are removed, not killed.
    pub dead: bool,
}

/// Everything the menu and the icon show.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuModel {
    /// `2 live, 1 asleep, 1 zombie, 2.4 GB` (also the tooltip).
    pub summary: String,
    pub entries: Vec<Entry>,
    /// How many red instances "Kill all zombies" would act on.
    pub zombies: usize,
    /// Launch at login: `Some(enabled)`, `None` where it cannot be told (then disabled).
    pub autostart: Option<bool>,
    pub worst: Worst,
}

impl MenuModel {
    /// The model of `instances` (the core's list, in its order) and `asleep` shared sessions
    /// (clients attached, no Serena running: no instance of theirs is in the list).
    pub fn of(instances: &[Instance], asleep: usize, autostart: Option<bool>) -> MenuModel {
        let mut order: Vec<&Instance> = instances.iter().collect();
        // The page's tab order: first seen first.
        order.sort_by(|a, b| {
            a.first_seen
                .total_cmp(&b.first_seen)
                .then(a.pid.cmp(&b.pid))
                .then(a.started_at.total_cmp(&b.started_at))
        });
        let entries = order
            .iter()
            .map(|i| {
                let dead = i.state_reason == Some(crate::core::ZombieReason::Dead);
                Entry {
                    id: i.process_id(),
                    label: format!("{} {}", cue(i.state), i.label()),
                    has_dashboard: i.port.is_some() && !dead,
                    killable: i.verified_serena || dead,
                    dead,
                }
            })
            .collect();
        MenuModel {
            summary: summary(instances, asleep),
            entries,
            zombies: instances
                .iter()
                .filter(|i| i.state == State::Zombie)
                .count(),
            autostart,
            worst: worst(instances),
        }
    }

    /// The entries of shared sessions' Serenas say how many clients they serve:
    /// `● 4242 - webapp (3 clients)`. `clients` is by PID.
    pub fn with_clients(mut self, clients: &std::collections::HashMap<u32, usize>) -> MenuModel {
        for e in &mut self.entries {
            if let Some(n) = clients.get(&e.id.pid) {
                let what = if *n == 1 { "client" } else { "clients" };
                e.label = format!("{} ({n} {what})", e.label);
            }
        }
        self
    }

    /// Whether `other` needs a new menu, or only a new summary line.
    pub fn same_shape(&self, other: &MenuModel) -> bool {
        MenuModel {
            summary: String::new(),
            ..self.clone()
        } == MenuModel {
            summary: String::new(),
            ..other.clone()
        }
    }

    pub fn kill_zombies_label(&self) -> String {
        format!("Kill all zombies ({})", self.zombies)
    }
}

/// The tab's shape cue of a state (the page's `cue`): colour is not the only sign.
fn cue(state: State) -> &'static str {
    match state {
        State::Starting => "…",
        State::LiveWithProject => "●",
        State::LiveNoProject => "◐",
        State::Zombie => "✕",
    }
}

fn worst(instances: &[Instance]) -> Worst {
    instances
        .iter()
        .map(|i| match i.state {
            State::Zombie => Worst::Red,
            State::LiveNoProject => Worst::Yellow,
            State::LiveWithProject | State::Starting => Worst::Green,
        })
        .max()
        .unwrap_or(Worst::None)
}

/// `2 live, 1 asleep, 1 zombie, 2.4 GB`: each count that is not zero, the asleep shared sessions
/// apart (they have no Serena, so neither an entry nor memory); `No Serena running` when there
/// is nothing to count.
pub fn summary(instances: &[Instance], asleep: usize) -> String {
    if instances.is_empty() && asleep == 0 {
        return "No Serena running".into();
    }
    let count = |f: fn(&Instance) -> bool| instances.iter().filter(|i| f(i)).count();
    let live = count(|i| i.state.is_live());
    let starting = count(|i| i.state == State::Starting);
    let zombies = count(|i| i.state == State::Zombie);
    let mut parts = vec![];
    if live > 0 {
        parts.push(format!("{live} live"));
    }
    if asleep > 0 {
        parts.push(format!("{asleep} asleep"));
    }
    if starting > 0 {
        parts.push(format!("{starting} starting"));
    }
    if zombies > 0 {
        let s = if zombies == 1 { "zombie" } else { "zombies" };
        parts.push(format!("{zombies} {s}"));
    }
    let memory: u64 = instances
        .iter()
        .filter_map(|i| i.cost.as_ref())
        .map(|c| c.memory_bytes)
        .sum();
    if memory > 0 {
        parts.push(bytes(memory));
    }
    parts.join(", ")
}

/// Bytes as people read them: `180 MB`, `2.4 GB` (the page's units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i >= 3 && v < 10.0 {
        format!("{v:.1} {}", UNITS[i])
    } else {
        format!("{v:.0} {}", UNITS[i])
    }
}

/// A label shown as it is: GTK and the other menus read `&` as a mnemonic marker (a project may
/// be called `R&D`).
pub fn literal(text: &str) -> String {
    text.replace('&', "&&")
}

/// The menu of `model`, with the items that are updated in place: the summary, and the check
/// mark of launch at login (a click toggles it before anything asks the system).
pub struct Built {
    pub menu: Menu,
    pub summary: MenuItem,
    pub autostart: CheckMenuItem,
}

/// Builds the tray menu of `model`.
pub fn build(model: &MenuModel) -> muda::Result<Built> {
    let item = |id: String, text: &str, enabled: bool| MenuItem::with_id(id, text, enabled, None);
    let summary = item(SUMMARY.into(), &literal(&model.summary), false);
    let open = item(OPEN.into(), "Open dashboard", true);
    let mut instances: Vec<Submenu> = Vec::with_capacity(model.entries.len());
    for e in &model.entries {
        let kill = if e.dead { "Remove record" } else { "Kill" };
        instances.push(Submenu::with_id_and_items(
            instance_id(e.id, "menu"),
            literal(&e.label),
            true,
            &[
                &item(instance_id(e.id, "show"), "Open in dashboard", true),
                &item(
                    instance_id(e.id, "dashboard"),
                    "Open its Serena dashboard",
                    e.has_dashboard,
                ),
                &item(instance_id(e.id, "kill"), kill, e.killable),
            ],
        )?);
    }
    let kill_zombies = item(
        KILL_ZOMBIES.into(),
        &model.kill_zombies_label(),
        model.zombies > 0,
    );
    let new_session = item(NEW_SESSION.into(), "New session...", true);
    let autostart = CheckMenuItem::with_id(
        AUTOSTART,
        "Launch at login",
        model.autostart.is_some(),
        model.autostart.unwrap_or(false),
        None,
    );
    let quit = item(QUIT.into(), "Quit", true);
    let (s1, s2, s3) = (
        PredefinedMenuItem::separator(),
        PredefinedMenuItem::separator(),
        PredefinedMenuItem::separator(),
    );
    let mut items: Vec<&dyn IsMenuItem> = vec![&summary, &open, &s1];
    items.extend(instances.iter().map(|s| s as &dyn IsMenuItem));
    if !instances.is_empty() {
        items.push(&s2);
    }
    items.extend([
        &kill_zombies as &dyn IsMenuItem,
        &new_session,
        &s3,
        &autostart,
        &quit,
    ]);
    let menu = Menu::with_items(&items)?;
    Ok(Built {
        menu,
        summary,
        autostart,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{test_instance, Cost, ZombieReason};
    use muda::MenuItemKind;

    fn instance(pid: u32, state: State, project: Option<&str>) -> Instance {
        Instance {
            state,
            state_reason: (state == State::Zombie).then_some(ZombieReason::Orphaned),
            started_at: 1000.0 + f64::from(pid),
            first_seen: 2000.0 - f64::from(pid),
            cost: Some(Cost {
                memory_bytes: 600 * 1024 * 1024,
                cpu_percent: 0.0,
                process_count: 2,
                processes: vec![],
            }),
            ..test_instance(pid, project)
        }
    }

    fn three() -> Vec<Instance> {
        let mut dead = instance(30, State::Zombie, None);
        dead.state_reason = Some(ZombieReason::Dead);
        dead.cost = None;
        vec![
            instance(10, State::LiveWithProject, Some("R&D web")),
            instance(20, State::Zombie, Some("webapp")),
            dead,
        ]
    }

    #[test]
    fn the_model_counts_orders_and_colours() {
        let m = MenuModel::of(&three(), 0, Some(false));
        assert_eq!(m.summary, "1 live, 2 zombies, 1.2 GB");
        assert_eq!(m.zombies, 2);
        assert_eq!(m.worst, Worst::Red);
        // First seen first, as the page's tabs.
        let labels: Vec<&str> = m.entries.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            ["✕ 30 - NO PROJECT", "✕ 20 - webapp", "● 10 - R&D web"]
        );
        assert!(m.entries[0].dead && !m.entries[0].has_dashboard);
        assert!(m.entries[1].has_dashboard && m.entries[1].killable);

        assert_eq!(MenuModel::of(&[], 0, None).worst, Worst::None);
        assert_eq!(MenuModel::of(&[], 0, None).summary, "No Serena running");
        let yellow = [
            instance(1, State::LiveNoProject, None),
            instance(2, State::LiveWithProject, Some("p")),
        ];
        assert_eq!(MenuModel::of(&yellow, 0, None).worst, Worst::Yellow);
        assert_eq!(
            MenuModel::of(&[instance(1, State::Starting, None)], 0, None).summary,
            "1 starting, 600 MB"
        );
    }

    #[test]
    fn the_summary_counts_asleep_sessions_apart_and_omits_zero_counts() {
        let live = instance(10, State::LiveWithProject, Some("webapp"));
        let zombie = instance(20, State::Zombie, Some("old"));
        let starting = instance(30, State::Starting, None);
        let cases: [(&[Instance], usize, &str); 8] = [
            (&[], 0, "No Serena running"),
            // Asleep sessions have no Serena: no memory, and the summary is not "nothing".
            (&[], 1, "1 asleep"),
            (&[], 2, "2 asleep"),
            (std::slice::from_ref(&live), 0, "1 live, 600 MB"),
            (std::slice::from_ref(&live), 3, "1 live, 3 asleep, 600 MB"),
            (
                &[live.clone(), zombie.clone()],
                2,
                "1 live, 2 asleep, 1 zombie, 1.2 GB",
            ),
            (
                &[live.clone(), starting.clone(), zombie.clone()],
                1,
                "1 live, 1 asleep, 1 starting, 1 zombie, 1.8 GB",
            ),
            (
                &[zombie.clone(), zombie.clone()],
                1,
                "1 asleep, 2 zombies, 1.2 GB",
            ),
        ];
        for (instances, asleep, expected) in cases {
            assert_eq!(summary(instances, asleep), expected, "{asleep} asleep");
            assert_eq!(MenuModel::of(instances, asleep, None).summary, expected);
        }
        // Only asleep sessions: nothing runs, the icon is grey and there is no entry.
        let m = MenuModel::of(&[], 2, None);
        assert_eq!((m.worst, m.entries.len(), m.zombies), (Worst::None, 0, 0));
        // A session falling asleep changes the summary line only.
        let awake = MenuModel::of(std::slice::from_ref(&live), 0, Some(true));
        let one_asleep = MenuModel::of(std::slice::from_ref(&live), 1, Some(true));
        assert_ne!(awake, one_asleep);
        assert!(awake.same_shape(&one_asleep));
    }

    #[test]
    fn a_shared_sessions_entry_counts_its_clients() {
        let clients = std::collections::HashMap::from([(20, 3), (10, 1)]);
        let m = MenuModel::of(&three(), 0, None).with_clients(&clients);
        let labels: Vec<&str> = m.entries.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "✕ 30 - NO PROJECT",
                "✕ 20 - webapp (3 clients)",
                "● 10 - R&D web (1 client)"
            ]
        );
    }

    #[test]
    fn a_memory_change_keeps_the_shape_and_a_state_change_does_not() {
        let before = MenuModel::of(&three(), 0, Some(true));
        let mut list = three();
        list[0].cost.as_mut().expect("cost").memory_bytes *= 2;
        let more = MenuModel::of(&list, 0, Some(true));
        assert_ne!(before, more);
        assert!(before.same_shape(&more));
        list[1].state = State::LiveWithProject;
        assert!(!before.same_shape(&MenuModel::of(&list, 0, Some(true))));
        assert!(!before.same_shape(&MenuModel::of(&three(), 0, Some(false))));
    }

    #[test]
    fn every_id_parses_back_to_its_action() {
        let id = ProcessId {
            pid: 4242,
            start_time: 1_700_000_000,
        };
        for (raw, action) in [
            (OPEN.to_string(), Action::OpenDashboard),
            (KILL_ZOMBIES.into(), Action::KillZombies),
            (NEW_SESSION.into(), Action::NewSession),
            (AUTOSTART.into(), Action::ToggleAutostart),
            (QUIT.into(), Action::Quit),
            (instance_id(id, "show"), Action::ShowInstance(id)),
            (
                instance_id(id, "dashboard"),
                Action::OpenInstanceDashboard(id),
            ),
            (instance_id(id, "kill"), Action::Kill(id)),
        ] {
            assert_eq!(Action::parse(&raw), Some(action), "{raw}");
        }
        for raw in [
            SUMMARY,
            "",
            "instance/4242/1700000000/menu",
            "instance/4242/1700000000/kill/x",
            "instance/x/1/kill",
            "instance/4242/kill",
            "instance/-1/1/kill",
        ] {
            assert_eq!(Action::parse(raw), None, "{raw}");
        }
    }

    #[test]
    fn bytes_read_like_the_page() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(180 * 1024 * 1024), "180 MB");
        assert_eq!(bytes(2_576_980_378), "2.4 GB");
        assert_eq!(bytes(20 * 1024 * 1024 * 1024), "20 GB");
    }

    /// What a built menu item shows: (id, text, enabled, checked for a check item).
    fn shown(item: &MenuItemKind) -> (String, String, bool, Option<bool>) {
        let id = item.id().as_ref().to_string();
        match item {
            MenuItemKind::MenuItem(i) => (id, i.text(), i.is_enabled(), None),
            MenuItemKind::Check(i) => (id, i.text(), i.is_enabled(), Some(i.is_checked())),
            MenuItemKind::Submenu(i) => (id, i.text(), i.is_enabled(), None),
            MenuItemKind::Predefined(_) => (id, "---".into(), true, None),
            MenuItemKind::Icon(i) => (id, i.text(), i.is_enabled(), None),
        }
    }

    #[test]
    fn the_built_menu_has_the_labels_ids_and_enabled_states_of_its_model() {
        let model = MenuModel::of(&three(), 0, Some(true));
        let built = build(&model).expect("the menu");
        let items = built.menu.items();
        let top: Vec<(String, String, bool, Option<bool>)> = items.iter().map(shown).collect();
        let texts: Vec<&str> = top.iter().map(|(_, t, _, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "1 live, 2 zombies, 1.2 GB",
                "Open dashboard",
                "---",
                "✕ 30 - NO PROJECT",
                "✕ 20 - webapp",
                "● 10 - R&&D web",
                "---",
                "Kill all zombies (2)",
                "New session...",
                "---",
                "Launch at login",
                "Quit",
            ]
        );
        let by_id = |id: &str| top.iter().find(|(i, ..)| i == id).cloned().expect(id);
        assert!(!by_id(SUMMARY).2, "the summary is information only");
        assert!(by_id(KILL_ZOMBIES).2);
        assert_eq!(by_id(AUTOSTART).3, Some(true));
        assert_eq!(built.summary.id().as_ref(), SUMMARY);

        // An instance's submenu: open it in the dashboard, its own dashboard, kill.
        let zombie = items[4].as_submenu().expect("a submenu");
        let sub: Vec<_> = zombie.items().iter().map(shown).collect();
        let id = model.entries[1].id;
        assert_eq!(
            sub,
            [
                (
                    instance_id(id, "show"),
                    "Open in dashboard".into(),
                    true,
                    None
                ),
                (
                    instance_id(id, "dashboard"),
                    "Open its Serena dashboard".into(),
                    true,
                    None
                ),
                (instance_id(id, "kill"), "Kill".into(), true, None),
            ]
        );
        for (id, ..) in &sub {
            assert!(Action::parse(id).is_some(), "{id}");
        }
        let dead = items[3].as_submenu().expect("a submenu");
        let sub: Vec<_> = dead.items().iter().map(shown).collect();
        assert_eq!((sub[1].2, sub[2].1.as_str()), (false, "Remove record"));

        // Nothing to kill, autostart unknown: both disabled; no instance separator.
        let empty = build(&MenuModel::of(&[], 0, None)).expect("the menu");
        let top: Vec<_> = empty.menu.items().iter().map(shown).collect();
        let kill = top.iter().find(|(i, ..)| i == KILL_ZOMBIES).expect("kill");
        assert_eq!((kill.1.as_str(), kill.2), ("Kill all zombies (0)", false));
        let auto = top
            .iter()
            .find(|(i, ..)| i == AUTOSTART)
            .expect("autostart");
        assert_eq!((auto.2, auto.3), (false, Some(false)));
        assert_eq!(top.len(), 8);
    }
}
