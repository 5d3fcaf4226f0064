# watch: the node agent runs under its init script, ran its program once at
# start, waited web-01's fixed share of the splay, and runs it again when the
# view changes (`convergent set`).

runs = '/var/lib/convergent_test/runs'
view = 'file:/var/lib/convergent_test/view.yml'

control 'watch-service' do
  describe command('/etc/init.d/convergent-watch-web status') do
    its('exit_status') { should eq 0 }
  end
  describe command('ls /etc/rc2.d') do
    its('stdout') { should match(/^S\d\dconvergent-watch-web$/) }
  end
  describe command('cat /proc/$(cat /run/convergent-watch-web.pid)/cmdline | tr "\0" " "') do
    its('stdout') { should match(%r{^/usr/local/bin/convergent --store #{view} .*watch --cluster web --node web-01 --splay 2s --splay-from node }) }
  end
end

control 'watch-reacts-to-set' do
  # Polls (up to 30s each) for the run at start, then for the run after set.
  describe command(<<~SH) do
    set -e
    i=0; until [ -s #{runs} ]; do i=$((i+1)); [ $i -le 300 ] || { echo no first run; exit 1; }; sleep 0.1; done
    before=$(wc -l <#{runs})
    /usr/local/bin/convergent --store #{view} set --cluster web app.workers=9 >/dev/null
    i=0; until [ "$(wc -l <#{runs})" -gt "$before" ]; do i=$((i+1)); [ $i -le 300 ] || { echo no run after set; exit 1; }; sleep 0.1; done
    tail -n 2 #{runs}
  SH
    its('exit_status') { should eq 0 }
    # Two runs, for two different generations, in state converged.
    its('stdout') { should match(/\A(\h+) converged\n(?!\1 )\h+ converged\n\z/) }
  end
  describe file('/var/log/convergent/watch-web.log') do
    # web-01's share of the 2s splay is 0.98 (1.96s), printed in whole seconds.
    its('content') { should match(/waiting 1s first \(splay\)/) }
    its('content') { should match(/convergent-test-on-change succeeded/) }
  end
end
