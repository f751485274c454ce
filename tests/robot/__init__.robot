*** Settings ***
Documentation     The module's Robot suites, run in file-name order against one node:
...               a real NS8 leader over SSH (./test-module.sh NODE_ADDR IMAGE_URL) or the
...               local node (./test-module.sh local). See node.resource for the keyword layer.
Resource          node.resource
Suite Setup       Connect to the node
Suite Teardown    Disconnect from the node
