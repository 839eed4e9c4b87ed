package avro

// AppendGoavro exposes the reference encoder to the tests.
func (c *Codec) AppendGoavro(buf []byte, u *User) ([]byte, error) { return c.appendGoavro(buf, u) }
