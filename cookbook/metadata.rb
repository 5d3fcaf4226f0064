name              'convergent'
maintainer        'The convergent authors'
maintainer_email  'convergent@example.com'
license           'Apache-2.0'
description       'Declares resources from a fleet-wide desired state kept in a shared view, read through the convergent binary'
version           '0.1.0'
chef_version      '>= 16', '< 19'   # tested on 16.13.16 and 18.2.7 (scripts/kitchen)

# The libraries and resources need Linux and nothing else; the example
# service (recipes/example_web*.rb) uses Debian's update-rc.d.
supports 'debian'
supports 'ubuntu'
