# json-attributes: two runs started with the attributes file of web passed
# with -j (as `convergent watch --exec chef-client -- -j FILE` does); between
# them the view removed feature_x for web-01 with null. The second run no
# longer sees feature_x, and the view's desired state never lands in node
# attributes, which Chef saves with the node (here /tmp/kitchen/nodes/).

convergent = '/usr/local/bin/convergent'
seen1 = json('/var/lib/convergent-test/seen-1.json')
seen2 = json('/var/lib/convergent-test/seen-2.json')

control 'json-attributes-removed-key' do
  describe seen1 do
    its(%w(desired feature_x)) { should eq true }
  end
  describe seen2 do
    its('desired') { should_not include 'feature_x' }
    its(%w(node_attributes desired feature_x)) { should be_nil }
    its(%w(desired version)) { should eq '2.4.1' }
  end
end

control 'json-attributes-not-in-node-attributes' do
  [seen1, seen2].each do |seen|
    describe seen do
      its('node_attributes') { should_not include 'desired' }
      its('node_attributes') { should_not include 'generation' }
      its(%w(node_attributes binary)) { should eq '/usr/local/bin/convergent' }
    end
  end
  describe json(command: 'cat /tmp/kitchen/nodes/*.json') do
    its(%w(normal convergent)) { should be_nil }
    its('run_list') { should eq ['recipe[convergent_test::json_attributes]'] }
  end
  describe command('cat /tmp/kitchen/nodes/*.json') do
    its('stdout') { should_not match(/feature_x/) }
  end
end

control 'json-attributes-check-in' do
  describe json(command: "#{convergent} --format json get observed/web/web-01") do
    its('status') { should eq 'success' }
    its('generation') { should eq seen2.params['generation'] }
  end
end
