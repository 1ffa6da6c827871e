module github.com/tlsgate/tlsgate

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/d--j/go-milter v0.10.1 // indirect
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-msgauth v0.7.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
