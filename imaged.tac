# Run imaged with `twistd -ny imaged.tac`.  Options come from the IMAGED_ARGS environment
# variable, with the same names as `twistd imaged --help`, e.g.
#   IMAGED_ARGS="--listen tcp:9292 --data-dir /var/lib/imaged" twistd -ny imaged.tac
from twisted.application.service import Application

from imaged.tap import makeService, options_from_environment

application = Application("imaged")
makeService(options_from_environment()).setServiceParent(application)
