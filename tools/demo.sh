#!/usr/bin/env bash
# The mitigation cycle on the shipped sample: a dry run with diff, the real run, and a
# second run that must change nothing. Runs as an ordinary user on this machine only:
# a DNS server on loopback answers the PTR look-ups, the "devices" are files in demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=demo-output
mkdir -p "$out"
zone=demo/dns.zone
pidfile="$out/dns.pid"
portfile="$out/dns.port"
rm -f "$pidfile" "$portfile"

python tools/minidns.py --listen 127.0.0.1 --port 0 --zone "$zone" \
    --pidfile "$pidfile" --portfile "$portfile" >"$out/dns.log" 2>&1 &
dns_pid=$!
stop_dns() { kill "$dns_pid" 2>/dev/null || true; wait "$dns_pid" 2>/dev/null || true; }
trap stop_dns EXIT

for _ in $(seq 50); do
    [[ -s "$portfile" ]] && break
    kill -0 "$dns_pid" 2>/dev/null || { cat "$out/dns.log" >&2; exit 1; }
    sleep 0.1
done
[[ -s "$portfile" ]] || { echo "demo: the DNS server did not start; see $out/dns.log" >&2; exit 1; }
export SMTPGUARD_DEMO_DNS_PORT="$(cat "$portfile")"
export ANSIBLE_DISPLAY_OK_HOSTS=true

banner() { printf '\n==== %s ====\n\n' "$*"; }

banner "1/3 Dry run: ansible-playbook playbooks/mitigate.yml --check --diff"
ansible-playbook playbooks/mitigate.yml --check --diff

banner "2/3 The real run: ansible-playbook playbooks/mitigate.yml"
ansible-playbook playbooks/mitigate.yml

banner "3/3 Again: the same logs must change nothing"
ansible-playbook playbooks/mitigate.yml | tee "$out/second-run.txt"
if ! grep -Eq 'changed=0 .*failed=0' "$out/second-run.txt" \
    || grep -Eq 'changed=[1-9]' "$out/second-run.txt"; then
    echo "demo: the second run changed something; it should not have" >&2
    exit 1
fi

banner "Done"
echo "Rendered lists:  $out/ips1/smtpguard-blocklist.nft  $out/feed1/blocklist.txt"
echo "State, snapshots: $out/state/"
echo "Per-source report: $out/reports/analysis-gw1.demo.json"
