//! Hosts of the test's own: a network namespace joined to this machine by a veth
//! pair, so a process in it reaches the broker over a link the test can cut, and
//! a broker user of its own (RabbitMQ lets `guest` in from loopback only).

use std::process::Command;

/// Runs a command that must succeed; panics with its stderr otherwise.
fn must(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace with a veth link to this machine.
pub struct Netns {
    pub name: String,
    host_link: String,
    /// This machine's address as seen from inside the namespace.
    pub host_ip: String,
}

impl Netns {
    pub fn create() -> Netns {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        // A /30 of its own per namespace, so parallel tests never share a subnet.
        let [a, b, ..] = uuid::Uuid::new_v4().into_bytes();
        let subnet = format!("10.{}.{}", 100 + a % 100, b & 0xfc);
        let netns = Netns {
            name: format!("tf-{tag}"),
            host_link: format!("tfh{tag}"),
            host_ip: format!("{subnet}.1"),
        };
        let inner = format!("tfn{tag}");
        must("ip", &["netns", "add", &netns.name]);
        must(
            "ip",
            &[
                "link",
                "add",
                &netns.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
            ],
        );
        must("ip", &["link", "set", &inner, "netns", &netns.name]);
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", netns.host_ip),
                "dev",
                &netns.host_link,
            ],
        );
        must("ip", &["link", "set", &netns.host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns.name, "ip"];
            all.extend(args);
            must("ip", &all);
        };
        inside(&["addr", "add", &format!("{subnet}.2/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        netns
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> [&str; 3] {
        ["netns", "exec", &self.name]
    }

    /// Cuts the link: packets are dropped silently, as in a real partition.
    pub fn cut(&self) {
        must("ip", &["link", "set", &self.host_link, "down"]);
    }

    pub fn heal(&self) {
        must("ip", &["link", "set", &self.host_link, "up"]);
    }
}

impl Drop for Netns {
    /// Deleting the namespace deletes the veth pair with it.
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A RabbitMQ user with a random password, full rights on `/`.
pub struct BrokerUser {
    pub name: String,
    pub password: String,
}

impl BrokerUser {
    pub fn create() -> BrokerUser {
        let user = BrokerUser {
            name: format!("tf-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            password: format!("pw-{}", uuid::Uuid::new_v4().simple()),
        };
        must(
            "rabbitmqctl",
            &["-q", "add_user", &user.name, &user.password],
        );
        must(
            "rabbitmqctl",
            &[
                "-q",
                "set_permissions",
                "-p",
                "/",
                &user.name,
                ".*",
                ".*",
                ".*",
            ],
        );
        user
    }

    /// A broker URL for this user at `host`, with a short heartbeat so that a
    /// cut link is noticed within seconds.
    pub fn url(&self, host: &str) -> String {
        format!(
            "amqp://{}:{}@{host}:5672/%2f?heartbeat=2",
            self.name, self.password
        )
    }
}

impl BrokerUser {
    /// Connections the broker has open for this user.
    pub fn connections(&self) -> usize {
        self.listed("list_connections", "user")
            .iter()
            .filter(|row| row[0] == self.name)
            .count()
    }

    /// Deliveries the broker has handed this user's channels and not had
    /// acked: jobs its worker holds.
    pub fn unacked(&self) -> u64 {
        self.listed("list_channels", "user messages_unacknowledged")
            .iter()
            .filter(|row| row[0] == self.name)
            .filter_map(|row| row.get(1)?.parse::<u64>().ok())
            .sum()
    }

    /// `rabbitmqctl <what> <columns>`, as rows of tab-separated fields.
    fn listed(&self, what: &str, columns: &str) -> Vec<Vec<String>> {
        let mut args = vec!["-q", "--no-table-headers", what];
        args.extend(columns.split(' '));
        let output = Command::new("rabbitmqctl")
            .args(&args)
            .output()
            .expect("rabbitmqctl");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect()
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_user", &self.name])
            .status();
    }
}
