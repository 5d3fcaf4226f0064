# watch-actions: convergent_watch 'web' started, restarted, then stopped, in
# each of two converges: it ends stopped and disabled, its process gone, and
# its log shows each start and each stop.

control 'watch-actions-stopped' do
  describe command('/etc/init.d/convergent-watch-web status') do
    its('exit_status') { should eq 3 }
  end
  describe command('ls /etc/rc2.d') do
    its('stdout') { should_not match(/^S\d\dconvergent-watch-web$/) }
  end
  describe file('/run/convergent-watch-web.pid') do
    it { should_not exist }
  end
  # [c]: the pattern does not match the shell that runs pgrep.
  describe command('pgrep -f "[c]onvergent.* watch --cluster web"') do
    its('exit_status') { should eq 1 }
  end
end

control 'watch-actions-log' do
  log = file('/var/log/convergent/watch-web.log').content.to_s
  # Per converge: start, restart (a stop and a start), stop.
  describe log.scan(/following .* for changes/).size do
    it { should eq 4 }
  end
  describe log.scan(/stopping on signal/).size do
    it { should eq 4 }
  end
end
