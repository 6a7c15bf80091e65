// Package agentproto will hold the wire types of the agent endpoint
// (/agent/v1): registration, poll, heartbeat, inventory, task progress and
// results, with one integer protocol version that only goes up.
//
// Not built yet: the agent and its protocol arrive with the host agent issue.
// This package imports only the standard library, so the agent never depends
// on the vault's code.
package agentproto
