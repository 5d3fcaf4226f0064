#
# Cookbook:: convergent
# Recipe:: default
#
# The report handler first (so that a run failing later still reports),
# then the binary and its config file.

include_recipe 'convergent::report' if node['convergent']['report']['enabled']
include_recipe 'convergent::install'
include_recipe 'convergent::config'
