//! Wire types shared by the condo host and its guest agent.
