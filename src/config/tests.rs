// Config tests are added with the config module's test suite.
