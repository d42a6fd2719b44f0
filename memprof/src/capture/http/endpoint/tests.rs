use super::*;

fn endpoints(only: Option<Vec<u16>>) -> Endpoints {
    let pprof = Pprof::new(6060, "/debug/pprof/heap", Duration::from_secs(1), 1 << 20);
    Endpoints::new(Arc::new(pprof), only, Registry::new(None))
}

fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
    ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect()
}

const KEY: ProcKey = ProcKey { pid: 1, start: 1 };

#[test]
fn the_preferred_port_first_and_unprobed_then_the_others_ascending() {
    let e = endpoints(None);
    let c = e.candidates(KEY, addrs(&[9090, 6060, 8080]));
    let got: Vec<(u16, bool)> = c.iter().map(|(a, p)| (a.port(), *p)).collect();
    assert_eq!(got, [(6060, false), (8080, true), (9090, true)]);
}

#[test]
fn a_round_probes_a_bounded_number_of_ports() {
    let e = endpoints(None);
    let ports: Vec<u16> = (7000..7100).chain([6060]).collect();
    let mut c = e.candidates(KEY, addrs(&ports));
    this_round(&mut c);
    let got: Vec<u16> = c.iter().map(|(a, _)| a.port()).collect();
    assert_eq!(got, [6060, 7000, 7001, 7002, 7003, 7004, 7005, 7006, 7007]);
    assert!(Round::begin(&e, KEY).is_some_and(|_r| Round::begin(&e, KEY).is_none()));
    assert!(
        Round::begin(&e, KEY).is_some(),
        "a round ended lets the next begin"
    );
}

#[test]
fn refused_ports_are_not_probed_again_and_the_list_narrows() {
    let e = endpoints(Some(vec![8080, 9090]));
    e.lock()
        .entry(KEY)
        .or_default()
        .refused
        .insert(SocketAddr::from(([127, 0, 0, 1], 9090)));
    let c = e.candidates(KEY, addrs(&[6060, 8080, 9090]));
    let got: Vec<u16> = c.iter().map(|(a, _)| a.port()).collect();
    assert_eq!(got, [8080]);
}
